// HTTPS requests with Go's own crypto/tls, one connection for all of them;
// prints one JSON line (the status of each, the protocol of the last).
// usage: go_client PORT CERT h1|h2 METHOD PATH [METHOD PATH]...
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
	port, certFile, proto := os.Args[1], os.Args[2], os.Args[3]
	pem, err := os.ReadFile(certFile)
	if err != nil {
		report(map[string]any{"ok": false, "error": err.Error()})
	}
	roots := x509.NewCertPool()
	roots.AppendCertsFromPEM(pem)
	client := &http.Client{Transport: &http.Transport{
		TLSClientConfig:   &tls.Config{RootCAs: roots},
		ForceAttemptHTTP2: proto == "h2",
	}}
	statuses := []int{}
	used := ""
	for at := 4; at+1 < len(os.Args); at += 2 {
		url := fmt.Sprintf("https://127.0.0.1:%s%s", port, os.Args[at+1])
		request, _ := http.NewRequest(os.Args[at], url, nil)
		response, err := client.Do(request)
		if err != nil {
			report(map[string]any{"ok": false, "error": err.Error(), "statuses": statuses})
		}
		io.Copy(io.Discard, response.Body)
		response.Body.Close()
		statuses = append(statuses, response.StatusCode)
		used = response.Proto
		if response.StatusCode >= 400 {
			report(map[string]any{"ok": false, "statuses": statuses, "proto": used})
		}
	}
	report(map[string]any{"ok": true, "statuses": statuses, "proto": used})
}

func report(result map[string]any) {
	line, _ := json.Marshal(result)
	fmt.Println(string(line))
	if result["ok"] != true {
		os.Exit(1)
	}
	os.Exit(0)
}
