//! Opening the store a source names: the CodeCommit API, or git over
//! whichever transport the URI names. The one place that knows both
//! concrete stores, so that neither imports the other or this factory.

use crate::config::{Backend, Source};
use crate::error::Result;
use crate::process::log::Log;
use crate::process::signal::Interrupt;
use crate::store::codecommit::api::CodeCommitStore;
use crate::store::codecommit::creds::Aws;
use crate::store::git::GitStore;
use crate::store::seam::{Cache, Identity, LockStore};

/// Opens the backend `source` asks for: the CodeCommit API, or git over
/// whichever transport the URI names, with the local copy `cache` says.
pub fn open_store(
    source: &Source,
    cache: Cache,
    log: &Log,
    interrupt: &Interrupt,
) -> Result<Box<dyn LockStore>> {
    let defaults = Identity::default();
    let identity = Identity {
        name: source.git.user_name.clone().unwrap_or(defaults.name),
        email: source.git.user_email.clone().unwrap_or(defaults.email),
    };
    match &source.backend {
        Backend::CodeCommitApi(cc) => {
            let aws = Aws::load(Some(&cc.region), cc.profile.as_deref())?;
            Ok(Box::new(CodeCommitStore::new(
                aws,
                &cc.name,
                &source.branch,
                &source.pool,
                &source.uri.to_string(),
                identity,
            )))
        }
        Backend::Git { .. } => Ok(Box::new(GitStore::open(
            source,
            identity,
            cache,
            log.clone(),
            interrupt.clone(),
        )?)),
    }
}
