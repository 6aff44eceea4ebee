package main

import (
	"bufio"
	"encoding/json"
	"errors"
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

// retryEvery is how often ADD asks again while the agent is away (socket missing, refused,
// or closed without an answer: an agent restarting or being upgraded).
const retryEvery = 100 * time.Millisecond

// AskAgent sends one request (a JSON line) over the agent's unix socket and waits for the
// one-line reply until the deadline. An agent that is not there or hangs up without answering
// (it is stopping) is asked again until the deadline, so an agent restarted during ADD, the
// next one, still answers it. An answer, even a refusal, is final.
func AskAgent(socket string, req Request, timeout time.Duration) (Reply, error) {
	deadline := time.Now().Add(timeout)
	for {
		reply, final, err := askOnce(socket, req, deadline)
		if final || time.Until(deadline) < retryEvery {
			return reply, err
		}
		time.Sleep(retryEvery)
	}
}

// askOnce is one connection: its reply and whether it is final (an answer, or a write or
// deadline error after which asking again cannot help).
func askOnce(socket string, req Request, deadline time.Time) (Reply, bool, error) {
	conn, err := net.DialTimeout("unix", socket, time.Until(deadline))
	if err != nil {
		return Reply{}, false, fmt.Errorf("agent not reachable at %s: %w", socket, err)
	}
	defer conn.Close()
	if err := conn.SetDeadline(deadline); err != nil {
		return Reply{}, true, err
	}
	body, err := json.Marshal(req)
	if err != nil {
		return Reply{}, true, err
	}
	if _, err := conn.Write(append(body, '\n')); err != nil {
		return Reply{}, false, fmt.Errorf("agent request: %w", err)
	}
	line, err := bufio.NewReader(conn).ReadBytes('\n')
	if err != nil {
		var timeout net.Error
		if errors.As(err, &timeout) && timeout.Timeout() {
			return Reply{}, true, fmt.Errorf("agent reply: %w", err)
		}
		return Reply{}, false, fmt.Errorf("agent reply: %w", err) // hung up: stopping
	}
	reply := Reply{}
	if err := json.Unmarshal(line, &reply); err != nil {
		return Reply{}, true, fmt.Errorf("agent reply %q: %w", string(line), err)
	}
	if !reply.OK {
		return reply, true, fmt.Errorf("agent: %s", reply.Error)
	}
	return reply, true, nil
}
