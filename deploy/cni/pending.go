package main

import (
	"bytes"
	"fmt"
	"net"
	"os"
	"os/exec"
	"regexp"
	"runtime"
	"sort"
	"strings"

	"golang.org/x/sys/unix"
)

// PendingTable is the nftables table podseg-cni installs; the agent deletes it in the same
// transaction that installs the pod's real table (`table inet podseg`).
const PendingTable = "podseg-pending"

var unsafeComment = regexp.MustCompile(`[^A-Za-z0-9_./=:-]`)

// PendingScript is the nft transaction that (re)creates the pending table: everything in and
// out is dropped except loopback, replies of allowed connections, packets from the node's
// addresses (kubelet probes), DNS to the cluster DNS addresses, and IPv6 neighbour discovery.
func PendingScript(pod PodRef, containerID string, dns, node []string) string {
	dns4, dns6 := split(dns)
	node4, node6 := split(node)
	clean := func(s string) string { return unsafeComment.ReplaceAllString(s, "_") }
	comment := fmt.Sprintf("podseg pending pod=%s/%s cid=%.12s",
		clean(pod.Namespace), clean(pod.Name), clean(containerID))
	var b strings.Builder
	fmt.Fprintf(&b, "table inet %s\ndelete table inet %s\n", PendingTable, PendingTable)
	fmt.Fprintf(&b, "table inet %s {\n\tcomment \"%s\"\n", PendingTable, comment)
	b.WriteString("\tchain input {\n\t\ttype filter hook input priority -5; policy drop;\n")
	b.WriteString("\t\tiif \"lo\" accept\n\t\tct state established,related accept\n")
	if len(node4) > 0 {
		fmt.Fprintf(&b, "\t\tip saddr { %s } accept\n", strings.Join(node4, ", "))
	}
	if len(node6) > 0 {
		fmt.Fprintf(&b, "\t\tip6 saddr { %s } accept\n", strings.Join(node6, ", "))
	}
	b.WriteString("\t\ticmpv6 type { nd-neighbor-solicit, nd-neighbor-advert, nd-router-advert } accept\n")
	b.WriteString("\t}\n")
	b.WriteString("\tchain output {\n\t\ttype filter hook output priority -5; policy drop;\n")
	b.WriteString("\t\toif \"lo\" accept\n\t\tct state established,related accept\n")
	for _, proto := range []string{"udp", "tcp"} {
		if len(dns4) > 0 {
			fmt.Fprintf(&b, "\t\tip daddr { %s } %s dport 53 accept\n", strings.Join(dns4, ", "), proto)
		}
		if len(dns6) > 0 {
			fmt.Fprintf(&b, "\t\tip6 daddr { %s } %s dport 53 accept\n", strings.Join(dns6, ", "), proto)
		}
	}
	b.WriteString("\t\ticmpv6 type { nd-neighbor-solicit, nd-neighbor-advert, nd-router-solicit } accept\n")
	b.WriteString("\t}\n}\n")
	return b.String()
}

// RemoveScript deletes the pending table if it is there (and only it).
func RemoveScript() string {
	return fmt.Sprintf("table inet %s\ndelete table inet %s\n", PendingTable, PendingTable)
}

func split(addrs []string) (v4, v6 []string) {
	seen := map[string]bool{}
	for _, a := range addrs {
		ip := net.ParseIP(a)
		if ip == nil || seen[ip.String()] {
			continue
		}
		seen[ip.String()] = true
		if ip.To4() != nil {
			v4 = append(v4, ip.String())
		} else {
			v6 = append(v6, ip.String())
		}
	}
	sort.Strings(v4)
	sort.Strings(v6)
	return v4, v6
}

// RunNft runs `nft -f -` with `script` inside the network namespace at `netnsPath`: on a
// thread of its own that enters the namespace and is thrown away afterwards.
func RunNft(nft, netnsPath, script string) error {
	fd, err := os.Open(netnsPath)
	if err != nil {
		return fmt.Errorf("open netns %s: %w", netnsPath, err)
	}
	defer fd.Close()
	done := make(chan error, 1)
	go func() {
		// Never unlocked: the goroutine's thread ends with it and never returns to the pool
		// while inside the pod's namespace.
		runtime.LockOSThread()
		if err := unix.Setns(int(fd.Fd()), unix.CLONE_NEWNET); err != nil {
			done <- fmt.Errorf("setns %s: %w", netnsPath, err)
			return
		}
		cmd := exec.Command(nft, "-f", "-")
		cmd.Stdin = strings.NewReader(script)
		var out bytes.Buffer
		cmd.Stdout, cmd.Stderr = &out, &out
		if err := cmd.Run(); err != nil {
			done <- fmt.Errorf("nft in %s: %w: %s", netnsPath, err, strings.TrimSpace(out.String()))
			return
		}
		done <- nil
	}()
	return <-done
}

// HasPending reports whether the namespace holds the pending table.
func HasPending(nft, netnsPath string) (bool, error) {
	err := RunNft(nft, netnsPath, fmt.Sprintf("list table inet %s\n", PendingTable))
	if err == nil {
		return true, nil
	}
	if strings.Contains(err.Error(), "No such file or directory") {
		return false, nil
	}
	return false, err
}
