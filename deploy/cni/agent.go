package main

import (
	"bufio"
	"encoding/json"
	"fmt"
	"net"
	"time"
)

// Request is what the plugin asks the agent: program this pod in this namespace now.
type Request struct {
	Op          string   `json:"op"`
	Namespace   string   `json:"namespace"`
	Name        string   `json:"name"`
	Netns       string   `json:"netns"`
	IPs         []string `json:"ips"`
	ContainerID string   `json:"containerId"`
	IfName      string   `json:"ifName"`
}

// Reply is the agent's answer, sent once the pod's real ruleset is committed (ok) or the
// agent cannot program it (error).
type Reply struct {
	OK    bool   `json:"ok"`
	Error string `json:"error,omitempty"`
}

// AskAgent sends one request (a JSON line) over the agent's unix socket and waits for the
// one-line reply until the deadline.
func AskAgent(socket string, req Request, timeout time.Duration) (Reply, error) {
	deadline := time.Now().Add(timeout)
	conn, err := net.DialTimeout("unix", socket, timeout)
	if err != nil {
		return Reply{}, fmt.Errorf("agent not reachable at %s: %w", socket, err)
	}
	defer conn.Close()
	if err := conn.SetDeadline(deadline); err != nil {
		return Reply{}, err
	}
	body, err := json.Marshal(req)
	if err != nil {
		return Reply{}, err
	}
	if _, err := conn.Write(append(body, '\n')); err != nil {
		return Reply{}, fmt.Errorf("agent request: %w", err)
	}
	line, err := bufio.NewReader(conn).ReadBytes('\n')
	if err != nil {
		return Reply{}, fmt.Errorf("agent reply: %w", err)
	}
	reply := Reply{}
	if err := json.Unmarshal(line, &reply); err != nil {
		return Reply{}, fmt.Errorf("agent reply %q: %w", string(line), err)
	}
	if !reply.OK {
		return reply, fmt.Errorf("agent: %s", reply.Error)
	}
	return reply, nil
}
