//! `[[api]]` rules: what the API-client gate holds of the requests and
//! queries a session makes through client libraries (boto3, the AWS SDK
//! for JavaScript, psql, psycopg2), as read from the stopped process.
//!
//! A rule names what it looks at; every field it sets must match, a list
//! matches when any of its globs does:
//! - `aws_services`, `aws_operations`: an AWS call, known by its SigV4
//!   signature's credential scope (any host: custom endpoints, VPC, FIPS);
//! - `methods`, `hosts`, `paths`: any HTTP/1.x request;
//! - `sql`: the SQL kinds of `[[rule]]`'s `sql`, for libpq queries, and
//!   `databases`: globs on the connection's database name (a query whose
//!   database could not be read matches a hold or deny rule, never an
//!   allow rule).
use serde::Deserialize;

use super::{
    file::{Examples, OnTimeout},
    sql, Action, HoldTerms,
};

/// One API call as the gate read it.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ApiCall {
    pub http: Option<HttpCall>,
    pub aws: Option<AwsCall>,
    /// An SQL text sent through libpq.
    pub sql: Option<String>,
    /// The database of the query's connection, where it could be read.
    pub database: Option<String>,
}

#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct HttpCall {
    pub method: String,
    pub host: String,
    /// The request target's path, without the query.
    pub path: String,
}

#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct AwsCall {
    pub service: String,
    pub region: String,
    /// Empty when the request does not say (an unknown REST call).
    pub operation: String,
}

impl ApiCall {
    /// Reads an example: `aws SERVICE OPERATION [REGION]`, `http METHOD HOST
    /// PATH`, `sql TEXT` or `sql@DATABASE TEXT` (as `guardctl explain --api`
    /// takes them).
    pub fn parse(text: &str) -> Result<Self, String> {
        let text = text.trim();
        let (kind, rest) = text.split_once(' ').unwrap_or((text, ""));
        let words: Vec<&str> = rest.split_whitespace().collect();
        match (kind, words.as_slice()) {
            ("aws", [service, operation, region @ ..]) if region.len() <= 1 => Ok(Self {
                aws: Some(AwsCall {
                    service: service.to_string(),
                    operation: operation.to_string(),
                    region: region.first().unwrap_or(&"us-east-1").to_string(),
                }),
                ..Self::default()
            }),
            ("http", [method, host, path]) => Ok(Self {
                http: Some(HttpCall {
                    method: method.to_string(),
                    host: host.to_string(),
                    path: path.to_string(),
                }),
                ..Self::default()
            }),
            (kind, _) if kind.starts_with("sql") && !rest.trim().is_empty() => {
                let database = match &kind[3..] {
                    "" => None,
                    at => Some(at.strip_prefix('@').filter(|d| !d.is_empty()).ok_or_else(
                        || format!("API example {text:?}: write `sql@DATABASE TEXT`"),
                    )?),
                };
                Ok(Self {
                    sql: Some(rest.trim().to_string()),
                    database: database.map(str::to_string),
                    ..Self::default()
                })
            }
            _ => Err(format!(
                "API example {text:?} is not `aws SERVICE OPERATION [REGION]`, \
                 `http METHOD HOST PATH` or `sql[@DATABASE] TEXT`"
            )),
        }
    }

    /// One line for people: `POST ec2 us-east-1 TerminateInstances`.
    pub fn describe(&self) -> String {
        match (&self.aws, &self.http, &self.sql) {
            (Some(aws), http, _) => {
                let method = http.as_ref().map_or("", |h| h.method.as_str());
                let operation = match aws.operation.as_str() {
                    "" => http.as_ref().map_or("", |h| h.path.as_str()),
                    op => op,
                };
                format!("{method} {} {} {operation}", aws.service, aws.region)
                    .trim()
                    .to_string()
            }
            (None, Some(http), _) => format!("{} {}{}", http.method, http.host, http.path),
            (None, None, Some(sql)) => match &self.database {
                Some(database) => format!("SQL on {database}: {sql}"),
                None => format!("SQL {sql}"),
            },
            (None, None, None) => "an unreadable request".into(),
        }
    }
}

/// An `[[api]]` table as written.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ApiRuleFile {
    pub id: String,
    pub description: String,
    /// In a later file: removes the rule of this id.
    pub disabled: bool,
    pub aws_services: Vec<String>,
    pub aws_operations: Vec<String>,
    pub methods: Vec<String>,
    pub hosts: Vec<String>,
    pub paths: Vec<String>,
    pub sql: Vec<String>,
    pub databases: Vec<String>,
    pub action: Option<Action>,
    pub approvals: Option<u32>,
    pub approvers: Vec<String>,
    pub self_approval: Option<bool>,
    #[serde(with = "humantime_serde")]
    pub timeout: Option<std::time::Duration>,
    pub on_timeout: Option<OnTimeout>,
    pub message: Option<String>,
    pub examples: Examples,
}

#[derive(Debug, Clone)]
pub struct ApiRule {
    pub id: String,
    aws_services: Vec<String>,
    aws_operations: Vec<String>,
    methods: Vec<String>,
    hosts: Vec<String>,
    paths: Vec<String>,
    sql: Vec<String>,
    databases: Vec<String>,
    pub action: Action,
    pub terms: HoldTerms,
    pub message: Option<String>,
}

impl ApiRule {
    pub fn compile(
        file: &ApiRuleFile,
        default_timeout: std::time::Duration,
    ) -> Result<Self, String> {
        let id = &file.id;
        let fail = |what: &str| format!("api rule {id:?}: {what}");
        if id.is_empty() {
            return Err("an api rule has an empty id".into());
        }
        let action = file.action.ok_or_else(|| fail("has no action"))?;
        if let Some(kind) = file.sql.iter().find(|k| !sql::KINDS.contains(&k.as_str())) {
            return Err(fail(&format!(
                "unknown sql kind {kind:?} (known: {})",
                sql::KINDS.join(", ")
            )));
        }
        let http = !(file.methods.is_empty() && file.hosts.is_empty() && file.paths.is_empty());
        let aws = !(file.aws_services.is_empty() && file.aws_operations.is_empty());
        if !http && !aws && file.sql.is_empty() {
            return Err(fail("names no aws_*, methods/hosts/paths or sql to match"));
        }
        if (http || aws) && !file.sql.is_empty() {
            return Err(fail("sql cannot be matched with HTTP fields in one rule"));
        }
        if file.sql.is_empty() && !file.databases.is_empty() {
            return Err(fail("databases needs sql kinds to match"));
        }
        if file.approvals == Some(0) {
            return Err(fail("approvals must be at least 1"));
        }
        let upper = |list: &[String]| list.iter().map(|m| m.to_ascii_uppercase()).collect();
        let lower = |list: &[String]| list.iter().map(|m| m.to_ascii_lowercase()).collect();
        Ok(Self {
            id: id.clone(),
            aws_services: lower(&file.aws_services),
            aws_operations: file.aws_operations.clone(),
            methods: upper(&file.methods),
            hosts: lower(&file.hosts),
            paths: file.paths.clone(),
            sql: file.sql.clone(),
            databases: file.databases.clone(),
            action,
            terms: super::rule::hold_terms(
                file.approvals,
                &file.approvers,
                file.self_approval,
                file.timeout.unwrap_or(default_timeout),
                file.on_timeout,
            ),
            message: file.message.clone(),
        })
    }

    /// Why the rule matches `call`, or None.
    pub fn matches(&self, call: &ApiCall) -> Option<Vec<String>> {
        let mut why = Vec::new();
        if !self.sql.is_empty() {
            let kinds = sql::classify(call.sql.as_deref()?);
            let kind = kinds.iter().find(|k| self.sql.iter().any(|s| s == *k))?;
            why.push(format!("SQL: {kind}"));
            if !self.databases.is_empty() {
                match &call.database {
                    Some(database) if any_glob(&self.databases, database) => {
                        why.push(format!("database {database}"));
                    }
                    Some(_) => return None,
                    // Unknown: a hold or deny is kept, an allowance not given.
                    None if self.action == Action::Allow => return None,
                    None => why.push("database unknown".into()),
                }
            }
            return Some(why);
        }
        if !(self.aws_services.is_empty() && self.aws_operations.is_empty()) {
            let aws = call.aws.as_ref()?;
            if !any_glob(&self.aws_services, &aws.service.to_ascii_lowercase()) {
                return None;
            }
            if !any_glob(&self.aws_operations, &aws.operation) {
                return None;
            }
            why.push(format!("AWS {} {}", aws.service, aws.operation));
        }
        if !(self.methods.is_empty() && self.hosts.is_empty() && self.paths.is_empty()) {
            let http = call.http.as_ref()?;
            if !any_glob(&self.methods, &http.method)
                || !any_glob(&self.hosts, &http.host.to_ascii_lowercase())
                || !any_glob(&self.paths, &http.path)
            {
                return None;
            }
            why.push(format!("{} {}{}", http.method, http.host, http.path));
        }
        Some(why)
    }

    /// Checks the rule's examples against itself.
    pub fn check_examples(&self, file: &ApiRuleFile) -> Result<(), String> {
        let cases = file
            .examples
            .matching
            .iter()
            .map(|e| (e, true))
            .chain(file.examples.no_match.iter().map(|e| (e, false)));
        for (example, expected) in cases {
            let call = ApiCall::parse(&example.display())
                .map_err(|m| format!("api rule {:?}: {m}", self.id))?;
            if self.matches(&call).is_some() != expected {
                let should = if expected {
                    "should match"
                } else {
                    "should not match"
                };
                return Err(format!(
                    "api rule {:?}: example `{}` {should}",
                    self.id,
                    example.display()
                ));
            }
        }
        Ok(())
    }
}

/// An empty list matches anything.
fn any_glob(globs: &[String], value: &str) -> bool {
    globs.is_empty() || globs.iter().any(|glob| glob_matches(glob, value))
}

/// `*` matches any run of characters, `?` one; nothing else is special.
pub fn glob_matches(glob: &str, value: &str) -> bool {
    let (glob, value): (Vec<char>, Vec<char>) = (glob.chars().collect(), value.chars().collect());
    let (mut g, mut v) = (0, 0);
    let mut star: Option<(usize, usize)> = None;
    while v < value.len() {
        match glob.get(g) {
            Some('*') => {
                star = Some((g, v));
                g += 1;
            }
            Some(c) if *c == '?' || *c == value[v] => {
                g += 1;
                v += 1;
            }
            _ => match star {
                Some((star_g, star_v)) => {
                    g = star_g + 1;
                    v = star_v + 1;
                    star = Some((star_g, star_v + 1));
                }
                None => return false,
            },
        }
    }
    glob[g..].iter().all(|c| *c == '*')
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rule(toml_text: &str) -> ApiRule {
        let file: ApiRuleFile = toml::from_str(toml_text).unwrap();
        ApiRule::compile(&file, std::time::Duration::from_secs(60)).unwrap()
    }

    #[test]
    fn globs_match_whole_values() {
        assert!(glob_matches("Delete*", "DeleteBucket"));
        assert!(glob_matches("*", ""));
        assert!(glob_matches("/repos/*/*", "/repos/o/r"));
        assert!(!glob_matches("Delete*", "BatchDeleteImage"));
        assert!(glob_matches("*Delete*", "BatchDeleteImage"));
        assert!(!glob_matches("ec2", "ec2x"));
    }

    #[test]
    fn an_aws_rule_matches_service_and_operation() {
        let rule = rule(
            r#"id = "aws-terminate"
               action = "hold"
               aws_services = ["ec2"]
               aws_operations = ["Terminate*"]"#,
        );
        let call = ApiCall::parse("aws ec2 TerminateInstances").unwrap();
        assert!(rule.matches(&call).is_some());
        assert!(rule
            .matches(&ApiCall::parse("aws ec2 DescribeInstances").unwrap())
            .is_none());
        assert!(rule
            .matches(&ApiCall::parse("http DELETE h /x").unwrap())
            .is_none());
    }

    #[test]
    fn an_sql_rule_uses_the_classifier() {
        let rule = rule(
            r#"id = "sql-drop"
               action = "hold"
               sql = ["drop"]"#,
        );
        assert!(rule
            .matches(&ApiCall::parse("sql drop table t").unwrap())
            .is_some());
        assert!(rule
            .matches(&ApiCall::parse("sql SELECT 'drop table t'").unwrap())
            .is_none());
    }

    #[test]
    fn a_databases_rule_matches_by_name_and_holds_when_the_name_is_unknown() {
        let hold = rule(
            r#"id = "prod-drop"
               action = "hold"
               sql = ["drop"]
               databases = ["prod*"]"#,
        );
        let call = |text: &str| ApiCall::parse(text).unwrap();
        assert!(hold.matches(&call("sql@prod_eu DROP TABLE t")).is_some());
        assert!(hold.matches(&call("sql@scratch DROP TABLE t")).is_none());
        assert!(hold.matches(&call("sql DROP TABLE t")).is_some());
        assert_eq!(
            call("sql@prod_eu DROP TABLE t").describe(),
            "SQL on prod_eu: DROP TABLE t"
        );
        let allow = rule(
            r#"id = "scratch"
               action = "allow"
               sql = ["drop"]
               databases = ["scratch"]"#,
        );
        assert!(allow.matches(&call("sql@scratch DROP TABLE t")).is_some());
        assert!(allow.matches(&call("sql DROP TABLE t")).is_none());
        assert!(ApiCall::parse("sql@ DROP TABLE t").is_err());
    }

    #[test]
    fn a_rule_without_fields_or_mixing_sql_is_refused() {
        let file: ApiRuleFile = toml::from_str(
            r#"id = "x"
            action = "hold""#,
        )
        .unwrap();
        assert!(ApiRule::compile(&file, Default::default()).is_err());
        let file: ApiRuleFile = toml::from_str(
            r#"id = "x"
            action = "hold"
            methods = ["DELETE"]
            sql = ["drop"]"#,
        )
        .unwrap();
        assert!(ApiRule::compile(&file, Default::default()).is_err());
    }

    #[test]
    fn examples_parse_or_say_why_not() {
        assert!(ApiCall::parse("http DELETE api.github.com").is_err());
        assert_eq!(
            ApiCall::parse("aws s3 DeleteBucket eu-west-1")
                .unwrap()
                .describe(),
            "s3 eu-west-1 DeleteBucket"
        );
    }
}
