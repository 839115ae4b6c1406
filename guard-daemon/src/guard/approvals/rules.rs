//! The approval rules, pure: who may decide a hold, how approvals count,
//! which signers a rule takes, and what a same-uid approver must prove.
//! Unit-tested without the kernel.
use super::super::{Hold, Peer};
use crate::{
    audit::Channel,
    policy::{HoldTerms, LocalAuth},
    procfs,
};

/// What a local approver must still do to prove a person.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Reauth {
    /// The approver's uid runs no agent session: its approval counts as is.
    NotNeeded,
    /// PAM re-authentication of `user` through `service`.
    Pam {
        service: String,
        user: String,
    },
    Polkit,
    /// Let through, with `why` in the audit record (local_auth opted out,
    /// or the host cannot authenticate).
    Unauthenticated(String),
    /// Refused: the policy wants an authentication this host cannot run.
    Refused(String),
}

/// How approvers whose uid runs agent sessions prove a person on this host.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(in crate::guard) enum SameUidAuth {
    Pam(String),
    Polkit,
    /// The policy asks for one this host cannot run: approvals are refused.
    Unavailable(String),
    Unauthenticated(String),
}

impl SameUidAuth {
    /// The `approval_authentication` line of `guardctl status`.
    pub(in crate::guard) fn describe(&self) -> String {
        match self {
            Self::Pam(service) => format!(
                "PAM (service {service}, never cached): a local approver whose uid runs an agent \
                 session re-authenticates for every approval; other uids and signed tokens need none"
            ),
            Self::Polkit => "polkit (org.agent-guard.approve): a local approver whose uid runs an \
                 agent session authenticates to polkit"
                .into(),
            Self::Unavailable(why) => {
                format!("refused: same-uid local approvals are refused ({why}); use signed tokens or another uid")
            }
            Self::Unauthenticated(why) => format!(
                "none: same-uid approvals are UNAUTHENTICATED ({why}): an agent can approve its own \
                 holds through the user's other processes (tmux, a ptraced shell)"
            ),
        }
    }

    /// What a held notice adds, if anything.
    pub(in crate::guard) fn notice_warning(&self) -> String {
        match self {
            Self::Unauthenticated(why) => {
                format!(" Same-uid approvals here are unauthenticated ({why}).")
            }
            _ => String::new(),
        }
    }
}

/// Who approved, and through which channel.
pub(super) struct Approver {
    /// What counts once: `uid:N` or `key:PRINCIPAL`.
    pub key: String,
    pub display: String,
    pub channel: Channel,
}

/// Where a request stands after one more approval.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Count {
    /// This identity approved before: it counts once.
    AlreadyCounted,
    /// Still held: `have` of the `need` distinct approvals.
    Progress { have: usize, need: u32 },
    /// The last approval it needed.
    Enough,
}

/// Counts `key` once among the identities that approved so far.
pub(super) fn count_approval(approved_by: &mut Vec<String>, needed: u32, key: &str) -> Count {
    if approved_by.iter().any(|k| k == key) {
        return Count::AlreadyCounted;
    }
    approved_by.push(key.to_string());
    if (approved_by.len() as u32) < needed {
        Count::Progress {
            have: approved_by.len(),
            need: needed,
        }
    } else {
        Count::Enough
    }
}

/// Why a local caller (not inside a session) may not decide `hold`, if it may not.
/// Without `approvers`, root and the command's own uid may; with them, only
/// the users and groups listed (root and the session's owner may still deny).
/// `owner`: the session's uid (None: unknown, no uid matches it).
pub(super) fn local_refusal(
    hold: &Hold,
    peer: Peer,
    owner: Option<u32>,
    verb: &str,
) -> Option<String> {
    let is_owner = Some(peer.uid) == owner;
    if verb == "approve" && !hold.terms.self_approval && is_owner {
        return Some(format!(
            "rule {} does not allow self-approval: uid {} runs the session",
            hold.rule, peer.uid
        ));
    }
    // Every matching hold rule's list must accept the caller.
    let groups = peer.pid.map(procfs::groups).unwrap_or_default();
    hold.terms
        .approver_lists()
        .find_map(|list| list_refusal(list, hold, peer, is_owner, &groups, verb))
}

/// Why one rule's `approvers` list does not accept `peer`, if it does not.
fn list_refusal(
    list: &[String],
    hold: &Hold,
    peer: Peer,
    is_owner: bool,
    groups: &[u32],
    verb: &str,
) -> Option<String> {
    if list.is_empty() {
        return (peer.uid != 0 && Some(peer.uid) != hold.request.uid).then(|| {
            let command_uid = hold
                .request
                .uid
                .map_or_else(|| "unknown".to_string(), |uid| uid.to_string());
            format!(
                "uid {} may not {verb} a request of uid {command_uid}",
                peer.uid
            )
        });
    }
    if verb == "deny" && (peer.uid == 0 || is_owner) {
        return None;
    }
    let listed = list.iter().any(|approver| {
        if let Some(name) = approver.strip_prefix("user:") {
            nix::unistd::User::from_name(name)
                .ok()
                .flatten()
                .is_some_and(|user| user.uid.as_raw() == peer.uid)
        } else if let Some(name) = approver.strip_prefix("group:") {
            nix::unistd::Group::from_name(name)
                .ok()
                .flatten()
                .is_some_and(|group| groups.contains(&group.gid.as_raw()))
        } else {
            false
        }
    });
    (!listed).then(|| {
        format!(
            "uid {} is not among the rule's approvers ({})",
            peer.uid,
            list.join(", ")
        )
    })
}

/// How an approver whose uid runs agent sessions proves a person, from the
/// policy's `local_auth` and whether PAM can run `service` here.
pub(super) fn same_uid_auth(
    local_auth: LocalAuth,
    service: &str,
    pam: Result<(), String>,
) -> SameUidAuth {
    match (local_auth, pam) {
        (LocalAuth::Auto | LocalAuth::Pam, Ok(())) => SameUidAuth::Pam(service.to_string()),
        (LocalAuth::Auto, Err(why)) => {
            SameUidAuth::Unauthenticated(format!("local_auth = \"auto\" and {why}"))
        }
        (LocalAuth::Pam, Err(why)) => SameUidAuth::Unavailable(format!(
            "local_auth = \"pam\" but PAM cannot run here: {why}"
        )),
        (LocalAuth::Polkit, _) => SameUidAuth::Polkit,
        (LocalAuth::None, _) => SameUidAuth::Unauthenticated("local_auth = \"none\"".into()),
    }
}

/// What an approver of `uid` (user name `user`) whose uid runs agent
/// sessions must still do.
pub(super) fn reauth(auth: SameUidAuth, uid: u32, user: Option<String>) -> Reauth {
    match auth {
        SameUidAuth::Pam(service) => match user {
            Some(user) => Reauth::Pam { service, user },
            None => Reauth::Refused(format!("PAM: uid {uid} has no user name to authenticate")),
        },
        SameUidAuth::Polkit => Reauth::Polkit,
        SameUidAuth::Unavailable(why) => Reauth::Refused(why),
        SameUidAuth::Unauthenticated(why) => Reauth::Unauthenticated(why),
    }
}

/// Why a token signed by `principal` does not count, if it does not: a rule
/// that lists `key:` approvers takes only those.
pub(super) fn signer_refusal(terms: &HoldTerms, principal: &str) -> Option<String> {
    let signer = format!("key:{principal}");
    terms.approver_lists().find_map(|list| {
        let keys_listed = list.iter().any(|a| a.starts_with("key:"));
        (keys_listed && !list.contains(&signer)).then(|| {
            format!(
                "{signer} is not among the rule's approvers ({})",
                list.join(", ")
            )
        })
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn each_identity_counts_once_until_the_rule_has_enough() {
        let mut approved = Vec::new();
        assert_eq!(
            count_approval(&mut approved, 2, "uid:1000"),
            Count::Progress { have: 1, need: 2 }
        );
        assert_eq!(
            count_approval(&mut approved, 2, "uid:1000"),
            Count::AlreadyCounted
        );
        assert_eq!(count_approval(&mut approved, 2, "key:alice"), Count::Enough);
        assert_eq!(approved, ["uid:1000", "key:alice"]);
        assert_eq!(count_approval(&mut Vec::new(), 1, "uid:0"), Count::Enough);
    }

    fn peer(uid: u32) -> Peer {
        Peer { uid, pid: None }
    }

    #[test]
    fn root_or_the_commands_user_may_decide_unless_the_rule_names_approvers() {
        let process = crate::process::ProcessHandle::open(std::process::id()).unwrap();
        let mut hold = crate::holds::tests::hold_of(process);
        hold.request.uid = Some(1000);
        let owner = Some(1000);
        assert_eq!(local_refusal(&hold, peer(0), owner, "approve"), None);
        assert_eq!(local_refusal(&hold, peer(1000), owner, "approve"), None);
        assert!(local_refusal(&hold, peer(1001), owner, "approve")
            .is_some_and(|why| why.contains("uid 1001 may not approve")));
        hold.terms.self_approval = false;
        assert!(local_refusal(&hold, peer(1000), owner, "approve")
            .is_some_and(|why| why.contains("does not allow self-approval")));
        assert_eq!(local_refusal(&hold, peer(1000), owner, "deny"), None);
        hold.terms.approvers = vec!["user:root".into()];
        hold.terms.self_approval = true;
        assert_eq!(local_refusal(&hold, peer(0), owner, "approve"), None);
        assert!(local_refusal(&hold, peer(1000), owner, "approve")
            .is_some_and(|why| why.contains("not among the rule's approvers")));
        // The session's owner may still deny.
        assert_eq!(local_refusal(&hold, peer(1000), owner, "deny"), None);
    }

    #[test]
    fn same_uid_approvers_authenticate_as_local_auth_says_or_are_refused() {
        let pam_missing = || Err("no PAM here".to_string());
        assert_eq!(
            same_uid_auth(LocalAuth::Auto, "agent-guard", Ok(())),
            SameUidAuth::Pam("agent-guard".into())
        );
        assert!(matches!(
            same_uid_auth(LocalAuth::Auto, "agent-guard", pam_missing()),
            SameUidAuth::Unauthenticated(why) if why.contains("no PAM here")
        ));
        assert!(matches!(
            same_uid_auth(LocalAuth::Pam, "agent-guard", pam_missing()),
            SameUidAuth::Unavailable(_)
        ));
        assert_eq!(
            same_uid_auth(LocalAuth::Polkit, "x", pam_missing()),
            SameUidAuth::Polkit
        );
        let pam = SameUidAuth::Pam("agent-guard".into());
        assert_eq!(
            reauth(pam.clone(), 1000, Some("dev".into())),
            Reauth::Pam {
                service: "agent-guard".into(),
                user: "dev".into()
            }
        );
        assert!(matches!(reauth(pam, 1000, None), Reauth::Refused(_)));
        assert!(matches!(
            reauth(SameUidAuth::Unavailable("x".into()), 1000, None),
            Reauth::Refused(_)
        ));
    }

    #[test]
    fn a_rule_that_lists_keys_takes_only_their_tokens() {
        let mut terms = HoldTerms::gate(1, std::time::Duration::ZERO);
        assert_eq!(signer_refusal(&terms, "mallory"), None);
        terms.approvers = vec!["user:root".into()];
        assert_eq!(signer_refusal(&terms, "mallory"), None, "no key: entries");
        terms.approvers.push("key:alice@example".into());
        assert_eq!(signer_refusal(&terms, "alice@example"), None);
        assert!(signer_refusal(&terms, "alice")
            .is_some_and(|why| why.contains("not among the rule's approvers")));
    }

    /// Two hold rules matched: each one's approvers must accept the caller.
    #[test]
    fn every_matching_rules_approvers_must_accept_the_approver() {
        let process = crate::process::ProcessHandle::open(std::process::id()).unwrap();
        let mut hold = crate::holds::tests::hold_of(process);
        hold.request.uid = Some(1000);
        let owner = Some(1000);
        hold.terms.approvers = vec!["user:root".into()];
        assert_eq!(local_refusal(&hold, peer(0), owner, "approve"), None);
        // A second rule with the default list (root or the command's uid)
        // still accepts root, but one naming only `user:nobody` does not.
        hold.terms.also_approvers = vec![Vec::new()];
        assert_eq!(local_refusal(&hold, peer(0), owner, "approve"), None);
        hold.terms.also_approvers.push(vec!["user:nobody".into()]);
        assert!(local_refusal(&hold, peer(0), owner, "approve")
            .is_some_and(|why| why.contains("(user:nobody)")));

        let mut terms = HoldTerms::gate(1, std::time::Duration::ZERO);
        terms.approvers = vec!["key:alice@example".into(), "key:bob@example".into()];
        terms.also_approvers = vec![vec!["key:bob@example".into()]];
        assert!(signer_refusal(&terms, "alice@example").is_some());
        assert_eq!(signer_refusal(&terms, "bob@example"), None);
    }
}
