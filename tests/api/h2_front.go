// An HTTP/2 TLS server for the API-client gate tests, run outside sessions:
// a small Kubernetes API (pods of namespace default, GET and DELETE) and, for
// every other path, a reverse proxy to moto's TLS server (which speaks only
// HTTP/1.1). Prints its port once it listens.
// usage: h2_front CERT KEY MOTO_PORT
package main

import (
	"crypto/tls"
	"crypto/x509"
	"encoding/json"
	"fmt"
	"net"
	"net/http"
	"net/http/httputil"
	"net/url"
	"os"
	"strings"
	"sync"
)

const podsPath = "/api/v1/namespaces/default/pods/"

func main() {
	certFile, keyFile, motoPort := os.Args[1], os.Args[2], os.Args[3]
	pem, err := os.ReadFile(certFile)
	check(err)
	roots := x509.NewCertPool()
	roots.AppendCertsFromPEM(pem)
	moto, _ := url.Parse("https://127.0.0.1:" + motoPort)
	proxy := httputil.NewSingleHostReverseProxy(moto)
	proxy.Transport = &http.Transport{TLSClientConfig: &tls.Config{RootCAs: roots}}
	var mu sync.Mutex
	pods := map[string]bool{"web": true, "keep-me": true, "db": true}
	handler := http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if !strings.HasPrefix(r.URL.Path, "/api/") {
			proxy.ServeHTTP(w, r)
			return
		}
		w.Header().Set("Content-Type", "application/json")
		w.Header().Set("X-Proto", r.Proto)
		name := strings.TrimPrefix(r.URL.Path, podsPath)
		mu.Lock()
		defer mu.Unlock()
		if !strings.HasPrefix(r.URL.Path, podsPath) || !pods[name] {
			w.WriteHeader(http.StatusNotFound)
			json.NewEncoder(w).Encode(map[string]interface{}{
				"kind": "Status", "apiVersion": "v1", "status": "Failure", "code": 404, "reason": "NotFound"})
			return
		}
		if r.Method == http.MethodDelete {
			delete(pods, name)
		}
		json.NewEncoder(w).Encode(map[string]interface{}{
			"kind": "Pod", "apiVersion": "v1", "proto": r.Proto,
			"metadata": map[string]string{"name": name, "namespace": "default"}})
	})
	listener, err := net.Listen("tcp", "127.0.0.1:0")
	check(err)
	fmt.Println(listener.Addr().(*net.TCPAddr).Port)
	server := &http.Server{Handler: handler}
	check(server.ServeTLS(listener, certFile, keyFile))
}

func check(err error) {
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
}
