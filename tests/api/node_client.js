// One HTTPS request with Node's own OpenSSL; prints one JSON line.
// usage: node node_client.js PORT CERT METHOD PATH
const https = require('https');
const fs = require('fs');
const [port, cert, method, path] = process.argv.slice(2);
const request = https.request(
  { host: '127.0.0.1', port: +port, method, path, ca: fs.readFileSync(cert) },
  (response) => {
    response.resume();
    response.on('end', () => console.log(JSON.stringify({ ok: response.statusCode < 400, status: response.statusCode })));
  });
request.on('error', (error) => {
  console.log(JSON.stringify({ ok: false, error: error.message }));
  process.exitCode = 1;
});
request.end();
