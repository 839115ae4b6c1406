//! Empty library target: lets guard-daemon declare this crate as a
//! build-dependency, so cargo rebuilds the daemon when the programs change.
#![no_std]
