//! Offsets the programs need from this kernel: tracepoint fields from
//! tracefs `format` files, struct members from BTF.
use std::{fs, path::Path};

use guard_common::{ExeNameOffsets, LsmOffsets, TracepointOffsets};

use super::{mount_pseudo_fs, KernelError};
use crate::btf::Btf;

pub(super) const TRACEFS: &str = "/sys/kernel/tracing";
const SECURITYFS: &str = "/sys/kernel/security";

/// The tracepoint fields the programs read, from this kernel's tracefs.
pub(super) fn tracepoint_offsets() -> Result<TracepointOffsets, KernelError> {
    Ok(TracepointOffsets {
        fork_child_pid: field_offset("sched", "sched_process_fork", "child_pid")?,
        exec_old_pid: field_offset("sched", "sched_process_exec", "old_pid")?,
        signal_sig: field_offset("signal", "signal_generate", "sig")?,
        signal_pid: field_offset("signal", "signal_generate", "pid")?,
        signal_code: field_offset("signal", "signal_generate", "code")?,
    })
}

/// Offsets for reading the executed file's name, from this kernel's BTF.
/// Without BTF the gate matches by comm only (and says so in status).
pub(super) fn exe_name_offsets() -> ExeNameOffsets {
    let read = || -> Result<ExeNameOffsets, crate::btf::BtfError> {
        let btf = Btf::from_sys_fs()?;
        Ok(ExeNameOffsets {
            enabled: 1,
            task_mm: btf.member_offset("task_struct", "mm")?,
            mm_exe_file: btf.member_offset("mm_struct", "exe_file")?,
            file_dentry: btf.member_offset("file", "f_path")?
                + btf.member_offset("path", "dentry")?,
            dentry_name: btf.member_offset("dentry", "d_name")?
                + btf.member_offset("qstr", "name")?,
            mm_arg_start: btf.member_offset("mm_struct", "arg_start")?,
            file_inode: btf.member_offset("file", "f_inode")?,
            inode_uid: btf.member_offset("inode", "i_uid")?,
            inode_nlink: btf.member_offset("inode", "i_nlink")?,
            mm_arg_end: btf.member_offset("mm_struct", "arg_end")?,
            dentry_parent: btf.member_offset("dentry", "d_parent")?,
            dentry_inode: btf.member_offset("dentry", "d_inode")?,
            inode_ino: btf.member_offset("inode", "i_ino")?,
            inode_sb: btf.member_offset("inode", "i_sb")?,
            sb_dev: btf.member_offset("super_block", "s_dev")?,
        })
    };
    read().unwrap_or_else(|err| {
        tracing::warn!("{err}: programs run under another name (symlinks) are not recognised");
        ExeNameOffsets::default()
    })
}

/// Offsets for the LSM programs, or why they cannot run on this kernel.
pub(super) fn lsm_offsets() -> Result<LsmOffsets, String> {
    ensure_securityfs();
    let active = fs::read_to_string(format!("{SECURITYFS}/lsm"))
        .map_err(|err| format!("{SECURITYFS}/lsm: {err}"))?;
    if !active.trim().split(',').any(|lsm| lsm == "bpf") {
        return Err(format!(
            "the BPF LSM is not active (lsm={}; boot with bpf in lsm=)",
            active.trim()
        ));
    }
    let read = || -> Result<LsmOffsets, crate::btf::BtfError> {
        let btf = Btf::from_sys_fs()?;
        Ok(LsmOffsets {
            task_tgid: btf.member_offset("task_struct", "tgid")?,
            file_mode: btf.member_offset("file", "f_mode")?,
            file_dentry: btf.member_offset("file", "f_path")?
                + btf.member_offset("path", "dentry")?,
            path_dentry: btf.member_offset("path", "dentry")?,
            dentry_inode: btf.member_offset("dentry", "d_inode")?,
            dentry_parent: btf.member_offset("dentry", "d_parent")?,
            inode_ino: btf.member_offset("inode", "i_ino")?,
            inode_sb: btf.member_offset("inode", "i_sb")?,
            sb_dev: btf.member_offset("super_block", "s_dev")?,
            task_start_time: btf.member_offset("task_struct", "start_time")?,
            file_flags: btf.member_offset("file", "f_flags")?,
            sock_peer_pid: btf.member_offset("sock", "sk_peer_pid")?,
            pid_nr: btf.member_offset("pid", "numbers")? + btf.member_offset("upid", "nr")?,
            unix_dentry: btf.member_offset("unix_sock", "path")?
                + btf.member_offset("path", "dentry")?,
        })
    };
    read().map_err(|err| format!("BTF for the LSM hooks: {err}"))
}

/// securityfs is not mounted at boot on every system; without it the LSM list is unreadable.
fn ensure_securityfs() {
    if Path::new(SECURITYFS).join("lsm").exists() {
        return;
    }
    let _ = mount_pseudo_fs("securityfs", SECURITYFS);
}

pub(super) fn ensure_tracefs() -> Result<(), KernelError> {
    if Path::new(TRACEFS).join("events").exists() {
        return Ok(());
    }
    mount_pseudo_fs("tracefs", TRACEFS)
        .map_err(|err| KernelError::Tracefs(format!("mounting tracefs at {TRACEFS}: {err}")))
}

fn field_offset(category: &str, event: &str, field: &str) -> Result<u32, KernelError> {
    let path = format!("{TRACEFS}/events/{category}/{event}/format");
    let format =
        fs::read_to_string(&path).map_err(|err| KernelError::Tracefs(format!("{path}: {err}")))?;
    parse_field_offset(&format, field)
        .ok_or_else(|| KernelError::Tracefs(format!("{path}: no field {field}")))
}

/// Finds `offset:N` on the line declaring `field` in a tracefs format file.
fn parse_field_offset(format: &str, field: &str) -> Option<u32> {
    format.lines().find_map(|line| {
        let declaration = line.trim().strip_prefix("field:")?.split(';').next()?;
        let name = declaration.rsplit([' ', '*']).next()?;
        let name = name.split('[').next()?;
        if name != field {
            return None;
        }
        let offset = line
            .split(';')
            .find_map(|part| part.trim().strip_prefix("offset:"))?;
        offset.trim().parse().ok()
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn offsets_are_read_from_both_fork_layouts() {
        // 6.18: comm fields are __data_loc.
        let new = "\tfield:__data_loc char[] parent_comm;\toffset:8;\tsize:4;\tsigned:0;\n\
                   \tfield:pid_t parent_pid;\toffset:12;\tsize:4;\tsigned:1;\n\
                   \tfield:__data_loc char[] child_comm;\toffset:16;\tsize:4;\tsigned:0;\n\
                   \tfield:pid_t child_pid;\toffset:20;\tsize:4;\tsigned:1;\n";
        assert_eq!(parse_field_offset(new, "child_pid"), Some(20));
        assert_eq!(parse_field_offset(new, "parent_pid"), Some(12));
        // 6.1: comm fields are inline char[16].
        let old = "\tfield:char parent_comm[16];\toffset:8;\tsize:16;\tsigned:0;\n\
                   \tfield:pid_t parent_pid;\toffset:24;\tsize:4;\tsigned:1;\n\
                   \tfield:char child_comm[16];\toffset:28;\tsize:16;\tsigned:0;\n\
                   \tfield:pid_t child_pid;\toffset:44;\tsize:4;\tsigned:1;\n";
        assert_eq!(parse_field_offset(old, "child_pid"), Some(44));
        assert_eq!(parse_field_offset(old, "child_comm"), Some(28));
        assert_eq!(parse_field_offset(old, "missing"), None);
    }

    #[test]
    fn offsets_are_read_from_the_signal_generate_format() {
        // 6.18; `pid` must not match `common_pid`.
        let format = "\tfield:int common_pid;\toffset:4;\tsize:4;\tsigned:1;\n\n\
                      \tfield:int sig;\toffset:8;\tsize:4;\tsigned:1;\n\
                      \tfield:int errno;\toffset:12;\tsize:4;\tsigned:1;\n\
                      \tfield:int code;\toffset:16;\tsize:4;\tsigned:1;\n\
                      \tfield:char comm[16];\toffset:20;\tsize:16;\tsigned:0;\n\
                      \tfield:pid_t pid;\toffset:36;\tsize:4;\tsigned:1;\n";
        assert_eq!(parse_field_offset(format, "sig"), Some(8));
        assert_eq!(parse_field_offset(format, "code"), Some(16));
        assert_eq!(parse_field_offset(format, "pid"), Some(36));
    }
}
