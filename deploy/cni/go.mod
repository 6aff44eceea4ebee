module podseg.dev/cni

go 1.22

require (
	github.com/containernetworking/cni v1.3.0
	golang.org/x/sys v0.23.0
)

require github.com/vishvananda/netns v0.0.4 // indirect
