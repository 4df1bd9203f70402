//! Who the person at this machine is, to git: the operator's default name.

/// git's `user.name` and `user.email` from the user's configuration
/// (`~/.gitconfig`, `$XDG_CONFIG_HOME/git/config`, `/etc/gitconfig`), as
/// `Name <email>`, or whichever of the two is set; `None` when neither is.
pub fn default_user_name() -> Option<String> {
    let cfg = git2::Config::open_default().ok()?;
    let get = |k| cfg.get_string(k).ok().filter(|s: &String| !s.is_empty());
    match (get("user.name"), get("user.email")) {
        (Some(n), Some(e)) => Some(format!("{n} <{e}>")),
        (Some(n), None) => Some(n),
        (None, Some(e)) => Some(e),
        (None, None) => None,
    }
}
