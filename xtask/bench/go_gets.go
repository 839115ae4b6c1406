// The Go API-client gate bench: an HTTPS server that answers every request
// with 200, and a client that makes N GETs on one keep-alive connection,
// over HTTP/1.1 (get) or HTTP/2 (get2).
// usage: go_gets serve PORTFILE CERT KEY | get|get2 PORT CERT N | noop
package main

import (
	"crypto/tls"
	"crypto/x509"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"strconv"
	"time"
)

func main() {
	switch {
	case len(os.Args) == 5 && os.Args[1] == "serve":
		serve(os.Args[2], os.Args[3], os.Args[4])
	case len(os.Args) == 5 && (os.Args[1] == "get" || os.Args[1] == "get2"):
		n, _ := strconv.Atoi(os.Args[4])
		get(os.Args[2], os.Args[3], n, os.Args[1] == "get2")
	case len(os.Args) == 2 && os.Args[1] == "noop":
	default:
		fmt.Fprintln(os.Stderr, "usage: go_gets serve PORTFILE CERT KEY | get|get2 PORT CERT N | noop")
		os.Exit(2)
	}
}

func serve(portFile, cert, key string) {
	listener, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		panic(err)
	}
	port := listener.Addr().(*net.TCPAddr).Port
	os.WriteFile(portFile, []byte(fmt.Sprintf("%d\n", port)), 0o600)
	server := &http.Server{
		Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			io.WriteString(w, "ok")
		}),
	}
	panic(server.ServeTLS(listener, cert, key))
}

func get(port, certFile string, n int, http2 bool) {
	pem, err := os.ReadFile(certFile)
	if err != nil {
		panic(err)
	}
	roots := x509.NewCertPool()
	roots.AppendCertsFromPEM(pem)
	transport := &http.Transport{TLSClientConfig: &tls.Config{RootCAs: roots}}
	if http2 {
		transport.ForceAttemptHTTP2 = true
	} else {
		// No "h2" offered: HTTP/1.1.
		transport.TLSNextProto = map[string]func(string, *tls.Conn) http.RoundTripper{}
	}
	client := &http.Client{Transport: transport}
	url := fmt.Sprintf("https://127.0.0.1:%s/", port)
	fetch := func() {
		response, err := client.Get(url)
		if err != nil {
			panic(err)
		}
		io.Copy(io.Discard, response.Body)
		response.Body.Close()
	}
	fetch() // the handshake, outside the timing
	start := time.Now()
	for i := 0; i < n; i++ {
		fetch()
	}
	fmt.Printf("%.4f\n", float64(time.Since(start).Nanoseconds())/1000.0/float64(n))
}
