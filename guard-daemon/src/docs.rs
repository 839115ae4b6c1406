//! Man pages and shell completions generated from the clap definitions, for
//! packaging (`cargo xtask dist` asks the built binaries for them).
use std::path::Path;

/// Writes `NAME.SECTION` for `command` and its subcommands into `dir`.
pub fn write_man_pages(command: clap::Command, section: &str, dir: &Path) -> std::io::Result<()> {
    std::fs::create_dir_all(dir)?;
    let name = command.get_name().to_string();
    let mut page = Vec::new();
    clap_mangen::Man::new(command.clone())
        .section(section)
        .render(&mut page)?;
    std::fs::write(dir.join(format!("{name}.{section}")), page)?;
    for sub in command.get_subcommands().filter(|s| !s.is_hide_set()) {
        let sub_name = format!("{name}-{}", sub.get_name());
        let mut page = Vec::new();
        clap_mangen::Man::new(sub.clone().name(sub_name.clone()))
            .section(section)
            .render(&mut page)?;
        std::fs::write(dir.join(format!("{sub_name}.{section}")), page)?;
    }
    Ok(())
}

/// Writes completion scripts for bash, zsh and fish into `dir`.
pub fn write_completions(mut command: clap::Command, dir: &Path) -> std::io::Result<()> {
    use clap_complete::Shell;
    std::fs::create_dir_all(dir)?;
    let name = command.get_name().to_string();
    for shell in [Shell::Bash, Shell::Zsh, Shell::Fish] {
        clap_complete::generate_to(shell, &mut command, &name, dir)?;
    }
    Ok(())
}
