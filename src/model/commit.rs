//! One commit as a reader of the history sees it, and who made it.
//!
//! Both faces name holders: the resource in its metadata and log, the
//! operator in `pool status`, the page and errors. They all name one
//! through [`Actor::name`], so that one build is named one way on every
//! screen. Pure: the trailers are read with [`crate::model::message`].

use serde::Serialize;

use crate::model::message::{Parsed, Trailer};

/// One commit as a reader of the history sees it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CommitMeta {
    /// Its id.
    pub id: String,
    /// Its first parent, if any.
    pub parent: Option<String>,
    /// Committer time, seconds since the Unix epoch (what Pool Boy dates claims by).
    pub time: i64,
    /// The author, `Name <email>`.
    pub author: String,
    /// The whole message.
    pub message: String,
}

/// Who made a commit, as its message and author say.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize)]
pub struct Actor {
    /// `team/pipeline/job #name` (trailer `Pool-Resource-Build`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub build: Option<String>,
    /// `BUILD_ID` (trailer `Pool-Resource-Build-Id`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub build_id: Option<String>,
    /// The `Build URL:` line (ours and the Go resource's).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub build_url: Option<String>,
    /// The Concourse the build ran on (trailer `Pool-Resource-Concourse`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub concourse: Option<String>,
    /// An operator (trailer `Pool-Resource-Operator`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub operator: Option<String>,
    /// Why (trailer `Pool-Resource-Reason`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
    /// The commit author, `Name <email>`.
    pub author: String,
}

/// How much a screen adds to a holder's name: what it does not show
/// elsewhere.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Detail {
    /// The name alone (the page: the reason is shown beside it and the
    /// URL is the name's link).
    Name,
    /// An operator's reason in brackets (`claimed_by` metadata and the
    /// build log, where the build URL is its own field or not wanted).
    Reason,
    /// The reason, and a build's URL after its name (`pool status`, errors).
    Full,
}

impl Actor {
    /// Reads who made `commit`.
    pub fn of(commit: &CommitMeta) -> Actor {
        let m = Parsed::new(&commit.message);
        let own = |t| m.trailer(t).map(String::from);
        Actor {
            build: own(Trailer::Build),
            build_id: own(Trailer::BuildId),
            build_url: m.build_url().map(String::from),
            concourse: own(Trailer::Concourse),
            operator: own(Trailer::Operator),
            reason: own(Trailer::Reason),
            author: commit.author.clone(),
        }
    }

    /// Whether a build (ours or the Go resource's) made the commit.
    pub fn is_build(&self) -> bool {
        self.operator.is_none()
            && (self.build.is_some() || self.build_id.is_some() || self.build_url.is_some())
    }

    /// The one way every screen names a holder. The precedence: the
    /// operator, else the build's name (`team/pipeline/job #7`), else its
    /// URL, else `build ID`, else the commit author. The URL comes before
    /// the id because it names the build for anyone (and is a link), while
    /// an id means something only inside Concourse's database. `detail`
    /// adds what the screen does not show elsewhere ([`Detail`]).
    pub fn name(&self, detail: Detail) -> String {
        if let Some(op) = &self.operator {
            return match (&self.reason, detail) {
                (Some(r), Detail::Reason | Detail::Full) => format!("{op} ({r})"),
                _ => op.clone(),
            };
        }
        match (&self.build, &self.build_url, &self.build_id) {
            (Some(b), Some(u), _) if detail == Detail::Full => format!("{b} {u}"),
            (Some(b), _, _) => b.clone(),
            (None, Some(u), _) => u.clone(),
            (None, None, Some(id)) => format!("build {id}"),
            (None, None, None) => self.author.clone(),
        }
    }

    /// One line for people: [`Actor::name`] with every [`Detail`].
    pub fn describe(&self) -> String {
        self.name(Detail::Full)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn actor(build: Option<&str>, id: Option<&str>, url: Option<&str>) -> Actor {
        Actor {
            build: build.map(String::from),
            build_id: id.map(String::from),
            build_url: url.map(String::from),
            author: "git <git@localhost>".into(),
            ..Actor::default()
        }
    }

    #[test]
    fn a_build_is_named_by_its_name_then_its_url_then_its_id_on_every_screen() {
        let url = "https://ci/builds/7";
        for detail in [Detail::Name, Detail::Reason] {
            assert_eq!(
                actor(Some("m/p/j #7"), Some("7"), Some(url)).name(detail),
                "m/p/j #7"
            );
            assert_eq!(actor(None, Some("7"), Some(url)).name(detail), url);
            assert_eq!(actor(None, Some("7"), None).name(detail), "build 7");
            assert_eq!(actor(None, None, None).name(detail), "git <git@localhost>");
        }
        assert_eq!(
            actor(Some("m/p/j #7"), Some("7"), Some(url)).describe(),
            format!("m/p/j #7 {url}")
        );
        assert_eq!(actor(None, Some("7"), Some(url)).describe(), url);
    }

    #[test]
    fn an_operator_comes_first_with_the_reason_where_the_screen_shows_no_other() {
        let a = Actor {
            operator: Some("ann".into()),
            reason: Some("maintenance".into()),
            ..actor(Some("m/p/j #7"), None, None)
        };
        assert_eq!(a.name(Detail::Name), "ann");
        assert_eq!(a.name(Detail::Reason), "ann (maintenance)");
        assert_eq!(a.describe(), "ann (maintenance)");
        assert!(!a.is_build());
    }
}
