// One HTTPS request with Go's own crypto/tls; prints one JSON line.
// usage: go_client PORT CERT METHOD PATH
package main

import (
	"crypto/tls"
	"crypto/x509"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"os"
)

func main() {
	port, certFile, method, path := os.Args[1], os.Args[2], os.Args[3], os.Args[4]
	pem, err := os.ReadFile(certFile)
	if err != nil {
		report(map[string]any{"ok": false, "error": err.Error()})
	}
	roots := x509.NewCertPool()
	roots.AppendCertsFromPEM(pem)
	client := &http.Client{Transport: &http.Transport{
		TLSClientConfig: &tls.Config{RootCAs: roots},
	}}
	request, _ := http.NewRequest(method, fmt.Sprintf("https://127.0.0.1:%s%s", port, path), nil)
	response, err := client.Do(request)
	if err != nil {
		report(map[string]any{"ok": false, "error": err.Error()})
	}
	io.Copy(io.Discard, response.Body)
	report(map[string]any{"ok": response.StatusCode < 400, "status": response.StatusCode})
}

func report(result map[string]any) {
	line, _ := json.Marshal(result)
	fmt.Println(string(line))
	if result["ok"] != true {
		os.Exit(1)
	}
	os.Exit(0)
}
