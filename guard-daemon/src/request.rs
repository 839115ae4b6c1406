//! One request: the command a stopped process runs and where it runs it,
//! read from /proc once. The policy judged it; a hold keeps it; the audit
//! record, the state file and the socket view are built from it.
use crate::{
    audit::{AuditEvent, AuditRecord},
    escape::{display_argv, escape_bytes},
    policy::{basename, CommandContext},
    procfs,
};

/// Environment variables that say where a command acts; recorded with holds.
pub const CONTEXT_ENV: &[&str] = &[
    "AWS_PROFILE",
    "AWS_REGION",
    "KUBECONFIG",
    "CLOUDSDK_CORE_PROJECT",
    "TF_WORKSPACE",
];

#[derive(Debug, Clone, Default, PartialEq)]
pub struct Request {
    pub pid: u32,
    pub session: u32,
    /// The session's agent, as the session table names it.
    pub agent: Option<String>,
    /// None when /proc did not say (the process went).
    pub uid: Option<u32>,
    /// The program the policy judged: the executable's name, or the script
    /// an interpreter runs.
    pub program: String,
    /// The command line as judged (an interpreter's script first).
    pub argv: Vec<Vec<u8>>,
    pub exe: String,
    pub cwd: String,
    /// `NAME=value` of the CONTEXT_ENV variables it has, escaped.
    pub context: Vec<String>,
    /// `pid:comm` from the process up, escaped.
    pub ancestry: Vec<String>,
}

impl Request {
    /// Reads the whole request of a process the policy did not judge (a
    /// gated system call's caller): its command line as it is.
    pub fn read(pid: u32, session: u32, agent: Option<String>) -> Self {
        let argv = procfs::cmdline(pid).unwrap_or_default();
        let exe = procfs::link(pid, "exe");
        let program = basename(&exe).to_string();
        Self::with_command(pid, session, agent, program, argv, exe)
    }

    /// The request of a command already read (`program`, judged `argv`,
    /// `exe`): reads the rest.
    pub fn with_command(
        pid: u32,
        session: u32,
        agent: Option<String>,
        program: String,
        argv: Vec<Vec<u8>>,
        exe: String,
    ) -> Self {
        Self {
            pid,
            session,
            agent,
            uid: procfs::uid(pid).ok(),
            program,
            argv,
            exe,
            cwd: procfs::link(pid, "cwd"),
            context: context_of(pid),
            ancestry: ancestry(pid),
        }
    }

    /// The request of a command the exec gate judged: what the judgement
    /// read already (cwd, uid, environment) is not read again.
    pub fn judged(pid: u32, session: u32, argv: Vec<Vec<u8>>, judged: CommandContext) -> Self {
        let CommandContext {
            program,
            exe,
            cwd,
            env,
            uid,
            agent,
            ..
        } = judged;
        let exe = exe.unwrap_or_default();
        let Some(cwd) = cwd else {
            return Self::with_command(pid, session, agent, program, argv, exe);
        };
        Self {
            pid,
            session,
            agent,
            uid,
            program,
            argv,
            exe,
            cwd,
            context: env
                .iter()
                .filter(|(name, _)| CONTEXT_ENV.contains(&name.as_str()))
                .map(|(name, value)| context_entry(name, value))
                .collect(),
            ancestry: ancestry(pid),
        }
    }

    pub fn command(&self) -> String {
        display_argv(&self.argv)
    }
}

/// Who ran what, where: the part of every record about one request. The
/// event defaults to a hold; callers name theirs.
impl From<&Request> for AuditRecord {
    fn from(request: &Request) -> Self {
        let mut record = AuditRecord::new(AuditEvent::Hold);
        record.pid = Some(request.pid);
        record.session = Some(request.session);
        record.agent = request.agent.clone();
        record.uid = request.uid;
        record.cwd = Some(request.cwd.clone());
        record.exe = Some(request.exe.clone());
        record.argv = request.argv.iter().map(|a| escape_bytes(a)).collect();
        record.ancestry = request.ancestry.clone();
        record.context = request.context.clone();
        record
    }
}

/// `NAME=value` of the CONTEXT_ENV variables the process has.
pub fn context_of(pid: u32) -> Vec<String> {
    procfs::environ(pid, CONTEXT_ENV)
        .iter()
        .map(|(name, value)| context_entry(name, value))
        .collect()
}

fn context_entry(name: &str, value: &str) -> String {
    format!("{name}={}", escape_bytes(value.as_bytes()))
}

/// `pid:comm` from `pid` up to init, escaped.
pub fn ancestry(pid: u32) -> Vec<String> {
    procfs::ancestry(pid)
        .into_iter()
        .map(|(pid, comm)| format!("{pid}:{}", escape_bytes(comm.as_bytes())))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A judged command keeps what the judgement read and takes only the
    /// context variables from the environment it read.
    #[test]
    fn a_judged_request_reuses_what_the_judgement_read() {
        let judged = CommandContext {
            program: "terraform".into(),
            exe: Some("/usr/bin/terraform".into()),
            argv: vec!["terraform".into(), "destroy".into()],
            cwd: Some("/srv/infra".into()),
            env: vec![
                ("AWS_PROFILE".into(), "prod\u{1b}[2J".into()),
                ("TF_VAR_secret".into(), "x".into()),
            ],
            uid: Some(4242),
            agent: Some("claude".into()),
            root: None,
            run_by: None,
        };
        let argv = vec![b"terraform".to_vec(), b"destroy".to_vec()];
        let request = Request::judged(std::process::id(), 7, argv, judged);
        assert_eq!(request.cwd, "/srv/infra");
        assert_eq!(request.uid, Some(4242));
        assert_eq!(
            request.context,
            vec!["AWS_PROFILE=prod\\u{1b}[2J".to_string()]
        );
        assert_eq!(request.agent.as_deref(), Some("claude"));
        let record = AuditRecord::from(&request);
        assert_eq!(record.argv, vec!["terraform", "destroy"]);
        assert_eq!(record.session, Some(7));
        assert_eq!(record.exe.as_deref(), Some("/usr/bin/terraform"));
        assert!(record.ancestry[0].starts_with(&format!("{}:", std::process::id())));
    }
}
