package realtime

import (
	"net"
	"net/http"
	"net/netip"
	"strings"
)

// clientKey names the client of r for MaxStreamsPerClient: its address,
// from Config.ClientIPHeader when one is configured (a proxy in front sets
// it), else the connection's peer. An IPv6 address counts as its /64, which
// one host is commonly given whole.
func (n *Node) clientKey(r *http.Request) string {
	raw := ""
	if h := n.cfg.ClientIPHeader; h != "" {
		raw = strings.TrimSpace(r.Header.Get(h))
	}
	if raw == "" {
		raw = r.RemoteAddr
		if host, _, err := net.SplitHostPort(raw); err == nil {
			raw = host
		}
	}
	return addrKey(raw)
}

// addrKey is the accounting key of an address: the address itself, or an
// IPv6 address's /64 prefix. Something that is not an address (a peer
// address of a listener that is not TCP) counts as itself, bounded.
func addrKey(s string) string {
	addr, err := netip.ParseAddr(s)
	if err != nil {
		return truncate(s, 64)
	}
	addr = addr.Unmap().WithZone("")
	if addr.Is6() {
		p, _ := addr.Prefix(64)
		return p.String()
	}
	return addr.String()
}
