package main

import (
	"fmt"
	"os"
	"time"

	"github.com/containernetworking/cni/pkg/skel"
	"github.com/containernetworking/cni/pkg/version"
)

// logf writes a diagnostic line to stderr (the runtime logs it; stdout carries the result).
func logf(format string, args ...any) {
	fmt.Fprintf(os.Stderr, "podseg-cni: "+format+"\n", args...)
}

// started is when the process started (package initialisation): an ADD's total time counts
// from here, so it includes reading the runtime's stdin and environment.
var started = time.Now()

// Report is one ADD's outcome and where its time went: installing the pending table, waiting
// for the agent's answer, and in all since the process started.
type Report struct {
	Pod     string
	Outcome string
	Pending time.Duration
	Agent   time.Duration
	Total   time.Duration
}

// Line is the report as logged on stderr (the runtime's log: containerd writes its plugins'
// stderr to its own), one line per ADD.
func (r Report) Line() string {
	ms := func(d time.Duration) float64 { return float64(d.Microseconds()) / 1000 }
	return fmt.Sprintf("add %s %s in %.1f ms (pending table %.1f ms, agent %.1f ms)",
		r.Pod, r.Outcome, ms(r.Total), ms(r.Pending), ms(r.Agent))
}

// Plugin holds what the commands need from outside, so tests can replace it.
type Plugin struct {
	Out     *os.File
	Install func(netns string, p Pending) error
	Remove  func(netns string) error
	Ask     func(socket string, req Request, timeout time.Duration) (Reply, error)
	Status  func(r Report)
	Now     func() time.Time
}

func defaultPlugin() *Plugin {
	nl := Netlink{}
	return &Plugin{Out: os.Stdout, Install: nl.Install, Remove: nl.Remove, Ask: AskAgent,
		Status: func(r Report) { logf("%s", r.Line()) }, Now: time.Now}
}

// Add installs the pending table, asks the agent to program the pod, and passes prevResult
// through unchanged. It fails only when the pending table cannot be installed (the pod would
// run unprotected) or the configuration is unreadable.
func (p *Plugin) Add(args *skel.CmdArgs) error {
	conf, err := ParseConfig(args.StdinData)
	if err != nil {
		return err
	}
	prev, err := ParsePrevResult(conf.RawPrevResult)
	if err != nil {
		return err
	}
	pod := ParseArgs(args.Args)
	node := append(append([]string{}, conf.NodeAddresses...), prev.Gateways...)
	pending := NewPending(pod, args.ContainerID, conf.ClusterDNS, node)
	t0 := p.Now()
	if err := p.Install(args.Netns, pending); err != nil {
		return fmt.Errorf("podseg-cni: cannot install the pending ruleset: %w", err)
	}
	t1 := p.Now()
	req := Request{
		Op: "add", Namespace: pod.Namespace, Name: pod.Name, Netns: args.Netns,
		IPs: prev.Addresses, ContainerID: args.ContainerID, IfName: args.IfName,
	}
	outcome := "programmed"
	if pod.Name == "" || pod.Namespace == "" {
		err = fmt.Errorf("no K8S_POD_NAMESPACE/K8S_POD_NAME in CNI_ARGS")
	} else {
		_, err = p.Ask(conf.AgentSocket, req, conf.Timeout())
	}
	t2 := p.Now()
	if err != nil {
		if conf.FailOpen {
			outcome = "fail-open"
			if rmErr := p.Remove(args.Netns); rmErr != nil {
				logf("fail open: cannot remove the pending ruleset: %v", rmErr)
			}
		} else {
			outcome = "fail-closed"
		}
		logf("%s/%s: %v; %s", pod.Namespace, pod.Name, err, outcome)
	}
	_, werr := p.Out.Write(conf.RawPrevResult)
	p.Status(Report{Pod: pod.Namespace + "/" + pod.Name, Outcome: outcome,
		Pending: t1.Sub(t0), Agent: t2.Sub(t1), Total: p.Now().Sub(started)})
	return werr
}

// Del removes the pending table if it is still there; the agent's own table stays (the agent
// removes it when the pod is gone).
func (p *Plugin) Del(args *skel.CmdArgs) error {
	if _, err := ParseConfig(args.StdinData); err != nil {
		return err
	}
	if args.Netns == "" {
		return nil
	}
	if _, statErr := os.Stat(args.Netns); statErr != nil {
		return nil // the namespace is gone, and the table with it
	}
	if err := p.Remove(args.Netns); err != nil {
		logf("del: %v", err)
	}
	return nil
}

// Check verifies the configuration and that a previous plugin produced a result.
func (p *Plugin) Check(args *skel.CmdArgs) error {
	conf, err := ParseConfig(args.StdinData)
	if err != nil {
		return err
	}
	if _, err := ParsePrevResult(conf.RawPrevResult); err != nil {
		return err
	}
	if args.Netns != "" {
		if _, err := os.Stat(args.Netns); err != nil {
			return fmt.Errorf("podseg-cni: netns %s: %w", args.Netns, err)
		}
	}
	return nil
}

func main() {
	p := defaultPlugin()
	skel.PluginMainFuncs(skel.CNIFuncs{Add: p.Add, Del: p.Del, Check: p.Check},
		version.All, "podseg-cni: keeps a new pod closed until podseg has programmed it")
}
