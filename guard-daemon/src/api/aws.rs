//! AWS calls in HTTP requests. A request is AWS's when it is signed with
//! SigV4, whatever the host (custom `endpoint_url`, VPC and FIPS endpoints):
//! the credential scope names the service and region. The operation comes
//! from where each protocol puts it.
use super::http::Request;
use crate::policy::api::AwsCall;

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Aws {
    /// Not signed with SigV4.
    NotAws,
    Call(AwsCall),
    /// A query-protocol call whose `Action` is in a body not read yet.
    NeedsBody,
}

/// The AWS call `request` makes.
pub fn call_of(request: &Request) -> Aws {
    let Some((region, service)) = credential_scope(request) else {
        return Aws::NotAws;
    };
    let operation = match operation(request, &service) {
        Some(operation) => operation,
        None if is_form(request) && (!request.complete() || request.body_unread) => {
            return Aws::NeedsBody
        }
        None => String::new(),
    };
    Aws::Call(AwsCall {
        service,
        region,
        operation,
    })
}

/// (region, service) of `Credential=KEY/DATE/REGION/SERVICE/aws4_request`,
/// in the Authorization header or a presigned URL's `X-Amz-Credential`.
fn credential_scope(request: &Request) -> Option<(String, String)> {
    let credential = match request.header("authorization") {
        Some(auth) if auth.trim_start().starts_with("AWS4-") => {
            let at = auth.find("Credential=")? + "Credential=".len();
            auth[at..]
                .split([',', ' '])
                .next()
                .unwrap_or("")
                .to_string()
        }
        _ => query_value(request.query(), "X-Amz-Credential")?,
    };
    let parts: Vec<&str> = credential.split('/').collect();
    match parts.as_slice() {
        [.., region, service, "aws4_request"] => {
            Some((region.to_string(), service.to_ascii_lowercase()))
        }
        _ => None,
    }
}

fn operation(request: &Request, service: &str) -> Option<String> {
    // JSON protocol: `X-Amz-Target: DynamoDB_20120810.DeleteTable`.
    if let Some(target) = request.header("x-amz-target") {
        return Some(target.rsplit(['.', '#']).next().unwrap_or("").to_string());
    }
    // RPC v2 CBOR: `/service/NAME/operation/OP`.
    let path = request.path();
    if let Some((_, op)) = path.split_once("/operation/") {
        return Some(op.trim_end_matches('/').to_string());
    }
    // Query protocol: `Action=` in the form body (or in the query string).
    if let Some(action) = query_value(request.query(), "Action") {
        return Some(action);
    }
    if is_form(request) {
        return query_value(&String::from_utf8_lossy(&request.body), "Action");
    }
    if service == "s3" {
        return Some(s3_operation(request));
    }
    None
}

fn is_form(request: &Request) -> bool {
    request
        .header("content-type")
        .is_some_and(|t| t.starts_with("application/x-www-form-urlencoded"))
}

/// S3's REST operations that destroy, by method, path depth and sub-resource;
/// other requests get their method's name (`GET`, `PUT`).
fn s3_operation(request: &Request) -> String {
    let query = request.query();
    let has = |name: &str| {
        query
            .split('&')
            .any(|pair| pair.split('=').next() == Some(name))
    };
    let path = request.path();
    // Path style `/bucket/key`; virtual-hosted style `bucket.s3...` has `/key`.
    let segments = path
        .trim_matches('/')
        .split('/')
        .filter(|s| !s.is_empty())
        .count();
    let virtual_host = request.host().contains(".s3") && !request.host().starts_with("s3");
    let object = if virtual_host {
        segments >= 1
    } else {
        segments >= 2
    };
    let op = match (request.method.as_str(), object) {
        ("POST", _) if has("delete") => "DeleteObjects",
        ("PUT", _) if has("lifecycle") => "PutBucketLifecycleConfiguration",
        ("PUT", _) if has("policy") => "PutBucketPolicy",
        ("PUT", _) if has("versioning") => "PutBucketVersioning",
        ("DELETE", _) if has("tagging") => "DeleteObjectTagging",
        ("DELETE", false) if has("policy") => "DeleteBucketPolicy",
        ("DELETE", false) if has("lifecycle") => "DeleteBucketLifecycle",
        ("DELETE", false) if has("website") => "DeleteBucketWebsite",
        ("DELETE", false) if has("cors") => "DeleteBucketCors",
        ("DELETE", _) if has("uploadId") => "AbortMultipartUpload",
        ("DELETE", true) => "DeleteObject",
        ("DELETE", false) => "DeleteBucket",
        ("PUT", true) => "PutObject",
        ("PUT", false) => "CreateBucket",
        ("GET" | "HEAD", true) => "GetObject",
        ("GET" | "HEAD", false) => "ListObjects",
        (method, _) => method,
    };
    op.to_string()
}

/// The decoded value of `name` in an `a=b&c=d` string.
fn query_value(query: &str, name: &str) -> Option<String> {
    query.split('&').find_map(|pair| {
        let (key, value) = pair.split_once('=')?;
        (percent_decode(key) == name).then(|| percent_decode(value))
    })
}

fn percent_decode(text: &str) -> String {
    let bytes = text.as_bytes();
    let hex = |byte: u8| (byte as char).to_digit(16);
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        let escaped = match bytes.get(i..i + 3) {
            Some([b'%', high, low]) => hex(*high).zip(hex(*low)),
            _ => None,
        };
        match (escaped, bytes[i]) {
            (Some((high, low)), _) => {
                out.push((high * 16 + low) as u8);
                i += 3;
                continue;
            }
            (None, b'+') => out.push(b' '),
            (None, byte) => out.push(byte),
        }
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::api::http::parse;

    const AUTH: &str = "Authorization: AWS4-HMAC-SHA256 Credential=AKID/20261206/us-east-1/ec2/aws4_request, SignedHeaders=host, Signature=ab\r\n";

    fn call(text: &str) -> Aws {
        call_of(&parse(text.as_bytes(), 0).requests[0])
    }

    #[test]
    fn query_protocol_reads_the_action_or_asks_for_the_body() {
        let head = format!(
            "POST / HTTP/1.1\r\nHost: 127.0.0.1:5000\r\nContent-Type: application/x-www-form-urlencoded; charset=utf-8\r\n{AUTH}Content-Length: 44\r\n\r\n"
        );
        assert_eq!(call(&head), Aws::NeedsBody);
        let whole = format!("{head}Action=TerminateInstances&InstanceId.1=i-1234");
        let Aws::Call(found) = call(&whole) else {
            panic!()
        };
        assert_eq!(
            (
                found.service.as_str(),
                found.region.as_str(),
                found.operation.as_str()
            ),
            ("ec2", "us-east-1", "TerminateInstances")
        );
    }

    #[test]
    fn json_and_rest_protocols() {
        let auth = AUTH.replace("/ec2/", "/dynamodb/");
        let json = format!(
            "POST / HTTP/1.1\r\n{auth}X-Amz-Target: DynamoDB_20120810.DeleteTable\r\nContent-Length: 0\r\n\r\n"
        );
        let Aws::Call(found) = call(&json) else {
            panic!()
        };
        assert_eq!(found.operation, "DeleteTable");
        let auth = AUTH.replace("/ec2/", "/s3/");
        for (line, op) in [
            ("DELETE /bucket HTTP/1.1", "DeleteBucket"),
            ("DELETE /bucket/key HTTP/1.1", "DeleteObject"),
            ("POST /bucket?delete HTTP/1.1", "DeleteObjects"),
            (
                "PUT /bucket?lifecycle HTTP/1.1",
                "PutBucketLifecycleConfiguration",
            ),
            ("GET /bucket HTTP/1.1", "ListObjects"),
        ] {
            let Aws::Call(found) = call(&format!("{line}\r\nHost: h\r\n{auth}\r\n")) else {
                panic!()
            };
            assert_eq!(found.operation, op, "{line}");
        }
    }

    #[test]
    fn unsigned_requests_are_not_aws() {
        assert_eq!(
            call("DELETE /x HTTP/1.1\r\nHost: ec2.amazonaws.com\r\n\r\n"),
            Aws::NotAws
        );
    }

    #[test]
    fn presigned_urls_carry_the_scope() {
        let line = "DELETE /b/k?X-Amz-Credential=AKID%2F20261206%2Feu-west-1%2Fs3%2Faws4_request&X-Amz-Signature=1 HTTP/1.1\r\nHost: h\r\n\r\n";
        let Aws::Call(found) = call(line) else {
            panic!()
        };
        assert_eq!(
            (found.region.as_str(), found.operation.as_str()),
            ("eu-west-1", "DeleteObject")
        );
    }
}
