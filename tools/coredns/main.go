// CoreDNS for the local plane's cluster DNS, with only the plugins its Corefile uses: the
// upstream build links every plugin (cloud DNS providers included), which triples build time.
package main

import (
	"github.com/coredns/coredns/coremain"

	// Registered by import; the order queries pass through them comes from upstream's
	// dnsserver.Directives, which lists every plugin.
	_ "github.com/coredns/coredns/plugin/bind"
	_ "github.com/coredns/coredns/plugin/cache"
	_ "github.com/coredns/coredns/plugin/errors"
	_ "github.com/coredns/coredns/plugin/health"
	_ "github.com/coredns/coredns/plugin/kubernetes"
	_ "github.com/coredns/coredns/plugin/loadbalance"
	_ "github.com/coredns/coredns/plugin/log"
	_ "github.com/coredns/coredns/plugin/loop"
	_ "github.com/coredns/coredns/plugin/metrics"
	_ "github.com/coredns/coredns/plugin/ready"
	_ "github.com/coredns/coredns/plugin/reload"
)

func main() {
	coremain.Run()
}
