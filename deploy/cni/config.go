// Package main is podseg-cni, a chained CNI plugin that keeps a new pod's network namespace
// closed (a pending nftables table) until the local podseg agent has committed the pod's
// real ruleset, so the pod's first packet is already subject to its policy.
package main

import (
	"encoding/json"
	"fmt"
	"net"
	"strings"
	"time"
)

// Defaults for the plugin configuration keys (docs/cni.md).
const (
	DefaultSocket  = "/run/podseg/cni.sock"
	DefaultTimeout = 5 * time.Second
)

// Config is the plugin's entry in the network configuration list.
type Config struct {
	CNIVersion    string          `json:"cniVersion"`
	Name          string          `json:"name"`
	Type          string          `json:"type"`
	AgentSocket   string          `json:"agentSocket"`
	TimeoutMs     int             `json:"timeoutMs"`
	FailOpen      bool            `json:"failOpen"`
	ClusterDNS    []string        `json:"clusterDNS"`
	NodeAddresses []string        `json:"nodeAddresses"`
	RawPrevResult json.RawMessage `json:"prevResult"`
}

// Timeout is how long ADD waits for the agent.
func (c *Config) Timeout() time.Duration {
	if c.TimeoutMs <= 0 {
		return DefaultTimeout
	}
	return time.Duration(c.TimeoutMs) * time.Millisecond
}

// ParseConfig reads the plugin configuration from stdin data and fills defaults.
func ParseConfig(data []byte) (*Config, error) {
	conf := &Config{}
	if err := json.Unmarshal(data, conf); err != nil {
		return nil, fmt.Errorf("podseg-cni: cannot read the network configuration: %w", err)
	}
	if conf.AgentSocket == "" {
		conf.AgentSocket = DefaultSocket
	}
	for _, addr := range append(append([]string{}, conf.ClusterDNS...), conf.NodeAddresses...) {
		if net.ParseIP(addr) == nil {
			return nil, fmt.Errorf("podseg-cni: %q is not an IP address", addr)
		}
	}
	return conf, nil
}

// PrevIPs are the addresses and gateways the previous plugin in the chain assigned.
type PrevIPs struct {
	Addresses []string // bare IPs, without prefix length
	Gateways  []string
}

// ParsePrevResult reads the IPs out of prevResult (any CNI version with an `ips` list).
func ParsePrevResult(raw json.RawMessage) (PrevIPs, error) {
	out := PrevIPs{}
	if len(raw) == 0 || string(raw) == "null" {
		return out, fmt.Errorf("podseg-cni must be chained after a plugin that assigns IPs (no prevResult)")
	}
	var prev struct {
		IPs []struct {
			Address string `json:"address"`
			Gateway string `json:"gateway"`
		} `json:"ips"`
	}
	if err := json.Unmarshal(raw, &prev); err != nil {
		return out, fmt.Errorf("podseg-cni: cannot read prevResult: %w", err)
	}
	for _, ip := range prev.IPs {
		addr, _, err := net.ParseCIDR(ip.Address)
		if err != nil {
			return out, fmt.Errorf("podseg-cni: prevResult address %q: %w", ip.Address, err)
		}
		out.Addresses = append(out.Addresses, addr.String())
		if gw := net.ParseIP(ip.Gateway); gw != nil {
			out.Gateways = append(out.Gateways, gw.String())
		}
	}
	return out, nil
}

// PodRef is the pod a sandbox belongs to, from CNI_ARGS.
type PodRef struct {
	Namespace string
	Name      string
}

// ParseArgs reads K8S_POD_NAMESPACE and K8S_POD_NAME out of CNI_ARGS (`K=V;K=V`).
func ParseArgs(args string) PodRef {
	ref := PodRef{}
	for _, pair := range strings.Split(args, ";") {
		key, value, ok := strings.Cut(pair, "=")
		if !ok {
			continue
		}
		switch key {
		case "K8S_POD_NAMESPACE":
			ref.Namespace = value
		case "K8S_POD_NAME":
			ref.Name = value
		}
	}
	return ref
}
