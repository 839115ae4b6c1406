//! PAM re-authentication of a local approver whose uid also runs agent
//! sessions: the approver's own password (or whatever the service's stack
//! asks, a security key for instance) proves a person, which a process of the
//! same uid driving the user's tmux or shell cannot give.
//!
//! libpam is loaded at run time (`libpam.so.0`), so guardd builds without its
//! headers and runs where it is missing (static builds, minimal images);
//! `availability` then says why same-uid approvals cannot be authenticated.
//! Nothing is cached: every approval runs the whole stack again.
use std::{
    ffi::{c_char, c_int, c_void, CStr, CString},
    path::Path,
    sync::OnceLock,
};

/// The PAM service the package installs (`/etc/pam.d/agent-guard`).
pub const DEFAULT_SERVICE: &str = "agent-guard";
const LIBRARY: &str = "libpam.so.0";

const PAM_SUCCESS: c_int = 0;
const PAM_BUF_ERR: c_int = 5;
const PAM_CONV_ERR: c_int = 19;
const PAM_PROMPT_ECHO_OFF: c_int = 1;
const PAM_PROMPT_ECHO_ON: c_int = 2;
const PAM_ERROR_MSG: c_int = 3;
/// An empty password never authenticates, whatever `nullok` says.
const PAM_DISALLOW_NULL_AUTHTOK: c_int = 0x0001;
const PAM_USER: c_int = 2;
/// Longest answer passed on to PAM.
const MAX_ANSWER: usize = 4096;

/// What PAM wants the approver to see or answer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Exchange {
    /// Answer needed; `echo`: whether the answer may be shown as typed.
    Prompt { text: String, echo: bool },
    /// Only to show.
    Info { text: String, error: bool },
}

#[repr(C)]
struct Message {
    style: c_int,
    text: *const c_char,
}

#[repr(C)]
struct Reply {
    text: *mut c_char,
    code: c_int,
}

type ConverseFn =
    unsafe extern "C" fn(c_int, *mut *const Message, *mut *mut Reply, *mut c_void) -> c_int;

#[repr(C)]
struct Conversation {
    converse: ConverseFn,
    data: *mut c_void,
}

struct Library {
    _lib: libloading::Library,
    start: unsafe extern "C" fn(
        *const c_char,
        *const c_char,
        *const Conversation,
        *mut *mut c_void,
    ) -> c_int,
    get_item: unsafe extern "C" fn(*mut c_void, c_int, *mut *const c_void) -> c_int,
    authenticate: unsafe extern "C" fn(*mut c_void, c_int) -> c_int,
    acct_mgmt: unsafe extern "C" fn(*mut c_void, c_int) -> c_int,
    end: unsafe extern "C" fn(*mut c_void, c_int) -> c_int,
    strerror: unsafe extern "C" fn(*mut c_void, c_int) -> *const c_char,
}

fn library() -> Result<&'static Library, String> {
    static LIBRARY_ONCE: OnceLock<Result<Library, String>> = OnceLock::new();
    LIBRARY_ONCE
        .get_or_init(load)
        .as_ref()
        .map_err(Clone::clone)
}

fn load() -> Result<Library, String> {
    // SAFETY: libpam's initialisers have no preconditions; every symbol below
    // is declared with the prototype of <security/pam_appl.h>.
    unsafe {
        let lib = libloading::Library::new(LIBRARY)
            .map_err(|err| format!("cannot load {LIBRARY}: {err}"))?;
        macro_rules! symbol {
            ($name:literal) => {
                *lib.get(concat!($name, "\0").as_bytes())
                    .map_err(|err| format!("{LIBRARY} has no {}: {err}", $name))?
            };
        }
        Ok(Library {
            start: symbol!("pam_start"),
            get_item: symbol!("pam_get_item"),
            authenticate: symbol!("pam_authenticate"),
            acct_mgmt: symbol!("pam_acct_mgmt"),
            end: symbol!("pam_end"),
            strerror: symbol!("pam_strerror"),
            _lib: lib,
        })
    }
}

/// Ok when PAM can authenticate through `service` here; otherwise why not.
pub fn availability(service: &str) -> Result<(), String> {
    let file = Path::new("/etc/pam.d").join(service);
    if !file.is_file() {
        return Err(format!(
            "no PAM service file {} (the package installs it)",
            file.display()
        ));
    }
    library().map(|_| ())
}

/// Runs `service`'s auth and account stacks for `user`, asking `converse`
/// for every prompt (None: the approver gave no answer, which fails). A
/// stack that ends up with another user than `user` fails too.
pub fn authenticate(
    service: &str,
    user: &str,
    mut converse: impl FnMut(Exchange) -> Option<String>,
) -> Result<(), String> {
    let lib = library()?;
    let service_c = CString::new(service).map_err(|_| "a NUL in the PAM service name")?;
    let user_c = CString::new(user).map_err(|_| "a NUL in the user name")?;
    let mut converse: &mut dyn FnMut(Exchange) -> Option<String> = &mut converse;
    let conversation = Conversation {
        converse: trampoline,
        data: (&mut converse as *mut &mut dyn FnMut(Exchange) -> Option<String>).cast(),
    };
    let mut handle: *mut c_void = std::ptr::null_mut();
    // SAFETY: the strings and the conversation outlive the handle, which is
    // ended below on every path.
    unsafe {
        let started = (lib.start)(
            service_c.as_ptr(),
            user_c.as_ptr(),
            &conversation,
            &mut handle,
        );
        if started != PAM_SUCCESS || handle.is_null() {
            return Err(format!("pam_start({service}) failed ({started})"));
        }
        let mut status = (lib.authenticate)(handle, PAM_DISALLOW_NULL_AUTHTOK);
        let mut step = "authentication";
        if status == PAM_SUCCESS {
            status = (lib.acct_mgmt)(handle, PAM_DISALLOW_NULL_AUTHTOK);
            step = "account check";
        }
        let result = if status == PAM_SUCCESS {
            let mut item: *const c_void = std::ptr::null();
            let got = (lib.get_item)(handle, PAM_USER, &mut item);
            let same = got == PAM_SUCCESS
                && !item.is_null()
                && CStr::from_ptr(item.cast()) == user_c.as_c_str();
            if same {
                Ok(())
            } else {
                Err(format!("PAM authenticated another user than {user}"))
            }
        } else {
            let text = (lib.strerror)(handle, status);
            let text = if text.is_null() {
                format!("error {status}")
            } else {
                CStr::from_ptr(text).to_string_lossy().into_owned()
            };
            Err(format!("PAM {step} of {user} failed: {text}"))
        };
        (lib.end)(handle, status);
        result
    }
}

/// PAM's conversation callback: hands each message to the Rust closure and
/// builds the reply array PAM frees with free(3).
unsafe extern "C" fn trampoline(
    count: c_int,
    messages: *mut *const Message,
    replies: *mut *mut Reply,
    data: *mut c_void,
) -> c_int {
    let Ok(count) = usize::try_from(count) else {
        return PAM_CONV_ERR;
    };
    if count == 0 || messages.is_null() || replies.is_null() || data.is_null() {
        return PAM_CONV_ERR;
    }
    // SAFETY: `data` is the `&mut dyn FnMut` that `authenticate` passed and
    // keeps alive for the whole conversation; Linux-PAM passes `count`
    // pointers to messages.
    let converse = unsafe { &mut *data.cast::<&mut dyn FnMut(Exchange) -> Option<String>>() };
    let array = unsafe { libc::calloc(count, std::mem::size_of::<Reply>()) }.cast::<Reply>();
    if array.is_null() {
        return PAM_BUF_ERR;
    }
    for index in 0..count {
        let message = unsafe { &**messages.add(index) };
        let text = if message.text.is_null() {
            String::new()
        } else {
            unsafe { CStr::from_ptr(message.text) }
                .to_string_lossy()
                .into_owned()
        };
        let exchange = match message.style {
            PAM_PROMPT_ECHO_OFF | PAM_PROMPT_ECHO_ON => Exchange::Prompt {
                text,
                echo: message.style == PAM_PROMPT_ECHO_ON,
            },
            style => Exchange::Info {
                text,
                error: style == PAM_ERROR_MSG,
            },
        };
        let wants_answer = matches!(exchange, Exchange::Prompt { .. });
        let answer = converse(exchange);
        if !wants_answer {
            continue;
        }
        let answer = answer
            .filter(|a| a.len() <= MAX_ANSWER)
            .and_then(|a| CString::new(a).ok());
        let Some(answer) = answer else {
            unsafe { free_replies(array, index) };
            return PAM_CONV_ERR;
        };
        // SAFETY: PAM frees each answer with free(3), so it is strdup'ed.
        let copy = unsafe { libc::strdup(answer.as_ptr()) };
        if copy.is_null() {
            unsafe { free_replies(array, index) };
            return PAM_BUF_ERR;
        }
        unsafe { (*array.add(index)).text = copy };
    }
    unsafe { *replies = array };
    PAM_SUCCESS
}

/// Frees the first `filled` answers and the array (a failed conversation).
unsafe fn free_replies(array: *mut Reply, filled: usize) {
    for index in 0..filled {
        // SAFETY: the caller's array has `filled` slots holding strdup'ed or null text.
        let text = unsafe { (*array.add(index)).text };
        if !text.is_null() {
            let length = unsafe { libc::strlen(text) };
            unsafe { std::ptr::write_bytes(text, 0, length) };
            unsafe { libc::free(text.cast()) };
        }
    }
    unsafe { libc::free(array.cast()) };
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_missing_service_file_is_named() {
        let why = availability("agent-guard-no-such-service").unwrap_err();
        assert!(
            why.contains("/etc/pam.d/agent-guard-no-such-service"),
            "{why}"
        );
    }
}
