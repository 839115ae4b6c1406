//! What the exec gate's kernel prefilter does, for `guardctl status` and
//! `guardctl explain`: per watched program, whether the kernel reads its
//! argv or stops every exec, and why.
use super::*;
use crate::{
    policy::prefilter::{ArgFilter, Prefilter},
    protocol::PrefilterView,
};

impl Guard {
    /// Every watched program, as the kernel treats its execs in a session.
    pub(super) fn prefilter_views(&self) -> Vec<PrefilterView> {
        (self.policy.prefilters().iter())
            .map(
                |(program, prefilter)| match self.in_kernel(program, prefilter) {
                    Ok(filter) => PrefilterView {
                        program: program.clone(),
                        prefiltered: true,
                        detail: format!(
                            "stops on {}",
                            (filter.atoms.keys())
                                .map(|atom| atom.describe())
                                .collect::<Vec<_>>()
                                .join(" ")
                        ),
                    },
                    Err(why) => PrefilterView {
                        program: program.clone(),
                        prefiltered: false,
                        detail: why,
                    },
                },
            )
            .collect()
    }

    /// Whether the kernel would stop `argv` in a session here, and why.
    pub(super) fn kernel_says(&self, argv: &[String]) -> String {
        self.policy
            .kernel_says(argv, |program| self.stops_here(program))
    }

    /// The filter the kernel applies to `program`, or why it stops always
    /// (on this host, or by the policy).
    fn in_kernel<'a>(
        &self,
        program: &str,
        prefilter: &'a Prefilter,
    ) -> Result<&'a ArgFilter, String> {
        if let Some(why) = self.stops_here(program) {
            return Err(why);
        }
        match prefilter {
            Prefilter::Always(why) => Err(why.clone()),
            Prefilter::Args(filter) => Ok(filter),
        }
    }

    /// Why this host's kernel stops every exec of `program`, whatever the policy.
    fn stops_here(&self, program: &str) -> Option<String> {
        if !self.kernel.recognises_exe_names() {
            return Some("no BTF offsets here to tell the executed file is the program".into());
        }
        if let Some(why) = self.kernel.argv_filters_failed().get(program) {
            return Some(format!("its filter did not fit in the kernel: {why}"));
        }
        if self.exec_gate.program_files.is_script(program) {
            return Some("a #! script here: the kernel sees its interpreter, not its file".into());
        }
        None
    }
}
