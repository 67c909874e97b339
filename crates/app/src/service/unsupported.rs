//! Systems without a service manager Flotilla knows.

use std::path::Path;

use super::{Plan, Role, Scope};

pub fn plan(_role: Role, _scope: Scope, _exe: &Path) -> anyhow::Result<Plan> {
    anyhow::bail!("services are not supported on this system: run `flotilla worker` yourself")
}

pub fn prepare(_plan: &Plan) -> anyhow::Result<()> {
    Ok(())
}

pub fn stop_commands(_plan: &Plan) -> Vec<Vec<String>> {
    Vec::new()
}

pub fn after_remove(_plan: &Plan) -> Vec<Vec<String>> {
    Vec::new()
}

pub fn active(_plan: &Plan) -> bool {
    false
}
