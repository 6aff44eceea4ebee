package main

import (
	"bufio"
	"errors"
	"net"
	"os"
	"strings"
	"testing"
	"time"

	"github.com/containernetworking/cni/pkg/skel"
	"github.com/google/nftables/expr"
)

const prev = `{"cniVersion":"1.0.0","interfaces":[{"name":"eth0"}],"ips":[{"address":"198.18.1.2/16","gateway":"198.18.0.1","interface":0},{"address":"fd00:198:18::1:2/64"}]}`

func conf(extra string) []byte {
	return []byte(`{"cniVersion":"1.0.0","name":"n","type":"podseg-cni","clusterDNS":["198.18.200.10"]` +
		extra + `,"prevResult":` + prev + `}`)
}

type fake struct {
	scripts []string // "install" / "remove", in order
	pending []Pending
	askErr  error
	asked   []Request
	outcome string
	report  Report
}

func (f *fake) plugin(t *testing.T) (*Plugin, *os.File) {
	out, err := os.CreateTemp(t.TempDir(), "out")
	if err != nil {
		t.Fatal(err)
	}
	return &Plugin{
		Out: out,
		Install: func(_ string, p Pending) error {
			f.scripts = append(f.scripts, "install")
			f.pending = append(f.pending, p)
			return nil
		},
		Remove: func(string) error { f.scripts = append(f.scripts, "remove"); return nil },
		Ask: func(_ string, req Request, _ time.Duration) (Reply, error) {
			f.asked = append(f.asked, req)
			if f.askErr != nil {
				return Reply{}, f.askErr
			}
			return Reply{OK: true}, nil
		},
		Status: func(r Report) { f.outcome, f.report = r.Outcome, r },
		Now:    time.Now,
	}, out
}

func args(stdin []byte) *skel.CmdArgs {
	return &skel.CmdArgs{ContainerID: "c0ffee", Netns: "/run/netns/x", IfName: "eth0",
		Args: "IgnoreUnknown=1;K8S_POD_NAMESPACE=ns1;K8S_POD_NAME=web-1", StdinData: stdin}
}

func TestParsePrevResult(t *testing.T) {
	got, err := ParsePrevResult([]byte(prev))
	if err != nil {
		t.Fatal(err)
	}
	if strings.Join(got.Addresses, ",") != "198.18.1.2,fd00:198:18::1:2" || strings.Join(got.Gateways, ",") != "198.18.0.1" {
		t.Fatalf("unexpected %+v", got)
	}
	if _, err := ParsePrevResult(nil); err == nil {
		t.Fatal("no prevResult must be an error")
	}
}

func TestParseConfigDefaultsAndErrors(t *testing.T) {
	c, err := ParseConfig(conf(""))
	if err != nil {
		t.Fatal(err)
	}
	if c.AgentSocket != DefaultSocket || c.Timeout() != DefaultTimeout || c.FailOpen {
		t.Fatalf("defaults: %+v", c)
	}
	if _, err := ParseConfig(conf(`,"nodeAddresses":["not-an-ip"]`)); err == nil {
		t.Fatal("a bad address must be refused")
	}
	if _, err := ParseConfig([]byte("{")); err == nil {
		t.Fatal("bad JSON must be refused")
	}
}

func TestParseArgs(t *testing.T) {
	ref := ParseArgs("IgnoreUnknown=1;K8S_POD_NAMESPACE=a;K8S_POD_NAME=b;K8S_POD_INFRA_CONTAINER_ID=x")
	if ref.Namespace != "a" || ref.Name != "b" {
		t.Fatalf("%+v", ref)
	}
}

func TestPendingAllowList(t *testing.T) {
	p := NewPending(PodRef{"ns1", "web 1"}, "0123456789abcdef",
		[]string{"198.18.200.10", "fd00:198:18::a", "198.18.200.10"}, []string{"198.18.0.1"})
	if p.Comment != "podseg pending pod=ns1/web_1 cid=0123456789ab" {
		t.Fatalf("comment %q", p.Comment)
	}
	if len(p.DNS4) != 1 || len(p.DNS6) != 1 || len(p.Node4) != 1 || len(p.Node6) != 0 {
		t.Fatalf("addresses %+v", p)
	}
	counts := map[string]int{}
	for _, r := range p.Rules() {
		counts[r.Chain]++
		if _, ok := r.Exprs[len(r.Exprs)-1].(*expr.Verdict); !ok {
			t.Fatalf("every rule ends in a verdict: %+v", r)
		}
	}
	// input: lo, established, 1 node address, 3 ND types; output: lo, established,
	// 2 DNS addresses x udp/tcp, 3 ND types.
	if counts["input"] != 6 || counts["output"] != 9 {
		t.Fatalf("rule counts %v", counts)
	}
}

func TestAddAgentAnswers(t *testing.T) {
	f := &fake{}
	p, out := f.plugin(t)
	if err := p.Add(args(conf(""))); err != nil {
		t.Fatal(err)
	}
	if len(f.scripts) != 1 || f.scripts[0] != "install" || len(f.pending[0].Node4) != 1 {
		t.Fatalf("pending not installed (with the gateway as node address): %v %+v", f.scripts, f.pending)
	}
	req := f.asked[0]
	if req.Namespace != "ns1" || req.Name != "web-1" || req.Netns != "/run/netns/x" || len(req.IPs) != 2 || req.ContainerID != "c0ffee" {
		t.Fatalf("request %+v", req)
	}
	data, _ := os.ReadFile(out.Name())
	if string(data) != prev {
		t.Fatalf("prevResult not passed through unchanged: %s", data)
	}
	if f.outcome != "programmed" {
		t.Fatal(f.outcome)
	}
}

func TestAddReportsItsDuration(t *testing.T) {
	f := &fake{}
	p, _ := f.plugin(t)
	clock := time.Unix(1000, 0)
	p.Now = func() time.Time { clock = clock.Add(3 * time.Millisecond); return clock }
	if err := p.Add(args(conf(""))); err != nil {
		t.Fatal(err)
	}
	r := f.report
	if r.Pod != "ns1/web-1" || r.Pending != 3*time.Millisecond || r.Agent != 3*time.Millisecond {
		t.Fatalf("report %+v", r)
	}
	line := Report{Pod: "ns1/web-1", Outcome: "programmed", Pending: 1500 * time.Microsecond,
		Agent: 10 * time.Millisecond, Total: 14250 * time.Microsecond}.Line()
	if line != "add ns1/web-1 programmed in 14.2 ms (pending table 1.5 ms, agent 10.0 ms)" &&
		line != "add ns1/web-1 programmed in 14.3 ms (pending table 1.5 ms, agent 10.0 ms)" {
		t.Fatal(line)
	}
}

func TestAddFailClosedKeepsPending(t *testing.T) {
	f := &fake{askErr: errors.New("no agent")}
	p, out := f.plugin(t)
	if err := p.Add(args(conf(""))); err != nil {
		t.Fatal(err)
	}
	if len(f.scripts) != 1 || f.outcome != "fail-closed" {
		t.Fatalf("%v %s", f.scripts, f.outcome)
	}
	data, _ := os.ReadFile(out.Name())
	if string(data) != prev {
		t.Fatal("prevResult not passed through")
	}
}

func TestAddFailOpenRemovesPending(t *testing.T) {
	f := &fake{askErr: errors.New("timeout")}
	p, _ := f.plugin(t)
	if err := p.Add(args(conf(`,"failOpen":true`))); err != nil {
		t.Fatal(err)
	}
	if len(f.scripts) != 2 || f.scripts[1] != "remove" || f.outcome != "fail-open" {
		t.Fatalf("%v %s", f.scripts, f.outcome)
	}
}

func TestAddWithoutPrevResultFails(t *testing.T) {
	f := &fake{}
	p, _ := f.plugin(t)
	stdin := []byte(`{"cniVersion":"1.0.0","name":"n","type":"podseg-cni"}`)
	if err := p.Add(args(stdin)); err == nil {
		t.Fatal("ADD without prevResult must fail")
	}
	if len(f.scripts) != 0 || len(f.asked) != 0 {
		t.Fatal("nothing may be done without prevResult")
	}
}

func TestDelRemovesOnlyPending(t *testing.T) {
	f := &fake{}
	p, _ := f.plugin(t)
	a := args(conf(""))
	a.Netns = t.TempDir() // exists
	if err := p.Del(a); err != nil {
		t.Fatal(err)
	}
	if len(f.scripts) != 1 || f.scripts[0] != "remove" {
		t.Fatalf("%v", f.scripts)
	}
	a.Netns = "/nonexistent/netns"
	if err := p.Del(a); err != nil || len(f.scripts) != 1 {
		t.Fatal("DEL of a gone namespace is a no-op")
	}
}

func TestAskAgentNoSocket(t *testing.T) {
	_, err := AskAgent(t.TempDir()+"/none.sock", Request{}, 100*time.Millisecond)
	if err == nil {
		t.Fatal("expected an error")
	}
}

// An agent that stops during ADD hangs up without answering; the next one (a restart or an
// upgrade) serves the socket again a little later, and it answers the same ADD.
func TestAskAgentRestartDuringAdd(t *testing.T) {
	sock := t.TempDir() + "/cni.sock"
	first, err := net.Listen("unix", sock)
	if err != nil {
		t.Fatal(err)
	}
	go func() {
		conn, err := first.Accept()
		if err == nil {
			_, _ = bufio.NewReader(conn).ReadBytes('\n')
			conn.Close() // stopping: no answer
		}
		first.Close() // the socket file goes with the old agent
		time.Sleep(300 * time.Millisecond)
		second, err := net.Listen("unix", sock)
		if err != nil {
			return
		}
		defer second.Close()
		conn, err = second.Accept()
		if err != nil {
			return
		}
		defer conn.Close()
		line, _ := bufio.NewReader(conn).ReadBytes('\n')
		if strings.Contains(string(line), `"name":"web"`) {
			_, _ = conn.Write([]byte(`{"ok": true}` + "\n"))
		}
	}()
	reply, err := AskAgent(sock, Request{Op: "add", Namespace: "x", Name: "web"}, 3*time.Second)
	if err != nil || !reply.OK {
		t.Fatalf("the restarted agent's answer: %v %v", reply, err)
	}
}

// A refusal is final: ADD does not ask again.
func TestAskAgentRefusalIsFinal(t *testing.T) {
	sock := t.TempDir() + "/cni.sock"
	ln, err := net.Listen("unix", sock)
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	asked := make(chan struct{}, 10)
	go func() {
		for {
			conn, err := ln.Accept()
			if err != nil {
				return
			}
			asked <- struct{}{}
			_, _ = bufio.NewReader(conn).ReadBytes('\n')
			_, _ = conn.Write([]byte(`{"ok": false, "error": "bad request"}` + "\n"))
			conn.Close()
		}
	}()
	if _, err := AskAgent(sock, Request{}, time.Second); err == nil {
		t.Fatal("expected the refusal")
	}
	if len(asked) != 1 {
		t.Fatalf("asked %d times", len(asked))
	}
}
