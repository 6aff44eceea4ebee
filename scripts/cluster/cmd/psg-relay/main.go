// psg-relay lets the root network namespace reach a TCP service inside another
// network namespace without giving the root namespace any interface, address or
// route: it listens on a loopback port in its own namespace and, per accepted
// connection, opens the outgoing socket from a thread that has joined the target
// namespace, then copies bytes both ways.
//
//	psg-relay -listen 127.0.0.1:16443 -netns /run/netns/psg-k8s-node1 -to 198.19.1.2:6443
package main

import (
	"flag"
	"io"
	"log"
	"net"
	"os"
	"runtime"
	"sync"
	"time"

	"golang.org/x/sys/unix"
)

type dialReq struct {
	reply chan dialRes
}

type dialRes struct {
	conn net.Conn
	err  error
}

// dialer runs on one OS thread that has moved into the target namespace for
// good (the thread is never unlocked, so Go never reuses it elsewhere).  A
// socket belongs to the namespace of the thread that created it.
func dialer(nsPath, to string, reqs <-chan dialReq, ready chan<- error) {
	runtime.LockOSThread()
	fd, err := unix.Open(nsPath, unix.O_RDONLY|unix.O_CLOEXEC, 0)
	if err == nil {
		err = unix.Setns(fd, unix.CLONE_NEWNET)
		unix.Close(fd)
	}
	ready <- err
	if err != nil {
		return
	}
	d := net.Dialer{Timeout: 10 * time.Second}
	for r := range reqs {
		c, err := d.Dial("tcp", to)
		r.reply <- dialRes{c, err}
	}
}

func pipe(a, b net.Conn) {
	var wg sync.WaitGroup
	cp := func(dst, src net.Conn) {
		defer wg.Done()
		_, _ = io.Copy(dst, src)
		if tc, ok := dst.(*net.TCPConn); ok {
			_ = tc.CloseWrite()
		}
	}
	wg.Add(2)
	go cp(a, b)
	go cp(b, a)
	wg.Wait()
	a.Close()
	b.Close()
}

func main() {
	listen := flag.String("listen", "127.0.0.1:16443", "address to listen on (in the relay's own namespace)")
	nsPath := flag.String("netns", "", "network namespace file to dial from, e.g. /run/netns/psg-k8s-node1")
	to := flag.String("to", "", "host:port to connect to inside that namespace")
	flag.Parse()
	if *nsPath == "" || *to == "" {
		flag.Usage()
		os.Exit(2)
	}
	reqs := make(chan dialReq)
	ready := make(chan error)
	go dialer(*nsPath, *to, reqs, ready)
	if err := <-ready; err != nil {
		log.Fatalf("psg-relay: setns %s: %v", *nsPath, err)
	}
	ln, err := net.Listen("tcp", *listen)
	if err != nil {
		log.Fatalf("psg-relay: listen: %v", err)
	}
	log.Printf("psg-relay: %s -> %s in %s", ln.Addr(), *to, *nsPath)
	for {
		c, err := ln.Accept()
		if err != nil {
			log.Printf("psg-relay: accept: %v", err)
			time.Sleep(100 * time.Millisecond)
			continue
		}
		go func(c net.Conn) {
			reply := make(chan dialRes, 1)
			reqs <- dialReq{reply}
			res := <-reply
			if res.err != nil {
				log.Printf("psg-relay: dial %s: %v", *to, res.err)
				c.Close()
				return
			}
			pipe(c, res.conn)
		}(c)
	}
}
