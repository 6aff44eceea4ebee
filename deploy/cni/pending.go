package main

import (
	"fmt"
	"net"
	"os"
	"regexp"
	"sort"

	"github.com/google/nftables"
	"github.com/google/nftables/binaryutil"
	"github.com/google/nftables/expr"
	"github.com/google/nftables/userdata"
	"golang.org/x/sys/unix"
)

// PendingTable is the nftables table podseg-cni installs (`table inet podseg-pending`); the
// agent deletes it in the same transaction that installs the pod's real table.
const PendingTable = "podseg-pending"

// pendingPriority hooks the pending chains before podseg's own (priority filter = 0).
const pendingPriority = -5

var unsafeComment = regexp.MustCompile(`[^A-Za-z0-9_./=:-]`)

// Pending is what the pending ruleset lets through (docs/cni.md, "Allow-list while pending"):
// loopback, replies of allowed connections, packets from the node's addresses (kubelet
// probes), DNS to the cluster DNS addresses, and IPv6 neighbour discovery. All else drops.
type Pending struct {
	Comment    string
	DNS4, DNS6 []net.IP
	Node4      []net.IP
	Node6      []net.IP
}

// NewPending builds the allow-list for a pod from the configured and prevResult addresses.
func NewPending(pod PodRef, containerID string, dns, node []string) Pending {
	clean := func(s string) string { return unsafeComment.ReplaceAllString(s, "_") }
	p := Pending{Comment: fmt.Sprintf("podseg pending pod=%s/%s cid=%.12s",
		clean(pod.Namespace), clean(pod.Name), clean(containerID))}
	p.DNS4, p.DNS6 = split(dns)
	p.Node4, p.Node6 = split(node)
	return p
}

func split(addrs []string) (v4, v6 []net.IP) {
	seen := map[string]bool{}
	for _, a := range addrs {
		ip := net.ParseIP(a)
		if ip == nil || seen[ip.String()] {
			continue
		}
		seen[ip.String()] = true
		if ip4 := ip.To4(); ip4 != nil {
			v4 = append(v4, ip4)
		} else {
			v6 = append(v6, ip.To16())
		}
	}
	less := func(s []net.IP) func(i, j int) bool {
		return func(i, j int) bool { return s[i].String() < s[j].String() }
	}
	sort.Slice(v4, less(v4))
	sort.Slice(v6, less(v6))
	return v4, v6
}

// Rule is one rule of the pending table, by chain.
type Rule struct {
	Chain string // "input" | "output"
	Exprs []expr.Any
}

func accept() expr.Any { return &expr.Verdict{Kind: expr.VerdictAccept} }

func cmp(data []byte) expr.Any {
	return &expr.Cmp{Op: expr.CmpOpEq, Register: 1, Data: data}
}

func meta(key expr.MetaKey) expr.Any { return &expr.Meta{Key: key, Register: 1} }

func ifname(name string) []byte {
	b := make([]byte, 16)
	copy(b, name)
	return b
}

func nfproto(ip net.IP) []expr.Any {
	family := byte(unix.NFPROTO_IPV6)
	if ip.To4() != nil {
		family = unix.NFPROTO_IPV4
	}
	return []expr.Any{meta(expr.MetaKeyNFPROTO), cmp([]byte{family})}
}

// addr matches the source (src) or destination address of an IPv4 or IPv6 packet.
func addr(ip net.IP, src bool) []expr.Any {
	offset, length, data := uint32(16), uint32(4), []byte(ip.To4())
	if data == nil {
		offset, length, data = 24, 16, []byte(ip.To16())
	}
	if src {
		offset -= length
	}
	return append(nfproto(ip),
		&expr.Payload{DestRegister: 1, Base: expr.PayloadBaseNetworkHeader, Offset: offset, Len: length},
		cmp(data))
}

func l4(proto byte) []expr.Any { return []expr.Any{meta(expr.MetaKeyL4PROTO), cmp([]byte{proto})} }

// Rules is the pending table's rules in order: the readable form of the allow-list.
func (p Pending) Rules() []Rule {
	rules := []Rule{
		{"input", []expr.Any{meta(expr.MetaKeyIIFNAME), cmp(ifname("lo")), accept()}},
		{"output", []expr.Any{meta(expr.MetaKeyOIFNAME), cmp(ifname("lo")), accept()}},
	}
	established := []expr.Any{
		&expr.Ct{Register: 1, Key: expr.CtKeySTATE},
		&expr.Bitwise{SourceRegister: 1, DestRegister: 1, Len: 4,
			Mask: binaryutil.NativeEndian.PutUint32(expr.CtStateBitESTABLISHED | expr.CtStateBitRELATED),
			Xor:  binaryutil.NativeEndian.PutUint32(0)},
		&expr.Cmp{Op: expr.CmpOpNeq, Register: 1, Data: []byte{0, 0, 0, 0}},
		accept(),
	}
	rules = append(rules, Rule{"input", established}, Rule{"output", established})
	for _, ip := range append(append([]net.IP{}, p.Node4...), p.Node6...) {
		rules = append(rules, Rule{"input", append(addr(ip, true), accept())})
	}
	for _, ip := range append(append([]net.IP{}, p.DNS4...), p.DNS6...) {
		for _, proto := range []byte{unix.IPPROTO_UDP, unix.IPPROTO_TCP} {
			exprs := append(addr(ip, false), l4(proto)...)
			exprs = append(exprs,
				&expr.Payload{DestRegister: 1, Base: expr.PayloadBaseTransportHeader, Offset: 2, Len: 2},
				cmp([]byte{0, 53}), accept())
			rules = append(rules, Rule{"output", exprs})
		}
	}
	// IPv6 neighbour discovery: router solicit/advert (133/134), neighbour solicit/advert.
	for _, nd := range []struct {
		chain string
		types []byte
	}{{"input", []byte{134, 135, 136}}, {"output", []byte{133, 135, 136}}} {
		chain := nd.chain
		for _, typ := range nd.types {
			exprs := []expr.Any{meta(expr.MetaKeyNFPROTO), cmp([]byte{unix.NFPROTO_IPV6})}
			exprs = append(exprs, l4(unix.IPPROTO_ICMPV6)...)
			exprs = append(exprs,
				&expr.Payload{DestRegister: 1, Base: expr.PayloadBaseTransportHeader, Offset: 0, Len: 1},
				cmp([]byte{typ}), accept())
			rules = append(rules, Rule{chain, exprs})
		}
	}
	sort.SliceStable(rules, func(i, j int) bool { return rules[i].Chain < rules[j].Chain })
	return rules
}

// Netlink applies and removes the pending table in a namespace (one transaction each).
type Netlink struct{}

func withConn(netnsPath string, fn func(c *nftables.Conn) error) error {
	fd, err := os.Open(netnsPath)
	if err != nil {
		return fmt.Errorf("open netns %s: %w", netnsPath, err)
	}
	defer fd.Close()
	c, err := nftables.New(nftables.WithNetNSFd(int(fd.Fd())))
	if err != nil {
		return fmt.Errorf("netlink in %s: %w", netnsPath, err)
	}
	return fn(c)
}

func pendingExists(c *nftables.Conn) (*nftables.Table, error) {
	tables, err := c.ListTablesOfFamily(nftables.TableFamilyINet)
	if err != nil {
		return nil, err
	}
	for _, t := range tables {
		if t.Name == PendingTable {
			return t, nil
		}
	}
	return nil, nil
}

// Install (re)creates the pending table in one transaction.
func (Netlink) Install(netnsPath string, p Pending) error {
	return withConn(netnsPath, func(c *nftables.Conn) error {
		old, err := pendingExists(c)
		if err != nil {
			return fmt.Errorf("list tables in %s: %w", netnsPath, err)
		}
		if old != nil { // a retried ADD: replace it whole
			c.DelTable(old)
		}
		table := c.AddTable(&nftables.Table{Family: nftables.TableFamilyINet, Name: PendingTable})
		drop := nftables.ChainPolicyDrop
		chains := map[string]*nftables.Chain{}
		for _, name := range []string{"input", "output"} {
			hook := nftables.ChainHookInput
			if name == "output" {
				hook = nftables.ChainHookOutput
			}
			chains[name] = c.AddChain(&nftables.Chain{Name: name, Table: table,
				Type: nftables.ChainTypeFilter, Hooknum: hook,
				Priority: nftables.ChainPriorityRef(pendingPriority), Policy: &drop})
		}
		for i, r := range p.Rules() {
			rule := &nftables.Rule{Table: table, Chain: chains[r.Chain], Exprs: r.Exprs}
			if i == 0 { // the owner, for operators and the agent (`nft list table`)
				rule.UserData = userdata.AppendString(nil, userdata.TypeComment, p.Comment)
			}
			c.AddRule(rule)
		}
		if err := c.Flush(); err != nil {
			return fmt.Errorf("pending table in %s: %w", netnsPath, err)
		}
		return nil
	})
}

// Remove deletes the pending table if it is there; nothing else.
func (Netlink) Remove(netnsPath string) error {
	return withConn(netnsPath, func(c *nftables.Conn) error {
		old, err := pendingExists(c)
		if err != nil || old == nil {
			return err
		}
		c.DelTable(old)
		return c.Flush()
	})
}
