//! `start`: everything a node needs, read from its home and the command line and checked
//! before any socket opens, so a mistake is one line naming the key or value.

use cometmesh_core::identity::NodeKey;

use crate::args::StartArgs;
use crate::error::CliError;
use crate::home::{self, Home, HomeError};
use crate::node_key;
use crate::settings::NodeSettings;

/// A node ready to run: checked settings and its key.
#[derive(Debug)]
pub struct Prepared {
    /// The home.
    pub home: Home,
    /// Settings after the command-line overrides.
    pub settings: NodeSettings,
    /// The node key.
    pub key: NodeKey,
}

/// Reads the home (config.toml, genesis.json chain id, node_key.json), applies the flags and
/// checks every value.
pub fn prepare(args: &StartArgs) -> Result<Prepared, CliError> {
    let home = Home::existing(&args.home)?;
    let mut config = home.load_config()?;
    args.p2p.apply(&mut config.p2p);
    if let Some(moniker) = &args.moniker {
        moniker.clone_into(&mut config.moniker);
    }
    config.validate().map_err(HomeError::from)?;
    let chain_id = match &args.chain_id {
        Some(id) => {
            home::check_chain_id(id)?;
            id.clone()
        }
        None => home.read_chain_id(&config)?,
    };
    let settings = NodeSettings::resolve(&home, config, chain_id)?;
    let key = node_key::load(&settings.node_key_path).map_err(HomeError::from)?;
    Ok(Prepared {
        home,
        settings,
        key,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::args::P2pOverrides;

    fn args(home: &std::path::Path) -> StartArgs {
        StartArgs {
            home: home.to_owned(),
            chain_id: None,
            moniker: None,
            p2p: P2pOverrides::default(),
        }
    }

    fn fresh_home(name: &str) -> std::path::PathBuf {
        let dir =
            std::env::temp_dir().join(format!("cometmesh-start-{name}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        home::init(&Home::new(&dir), Some("chain-a"), || unreachable!(), "m").unwrap();
        dir
    }

    #[test]
    fn reads_home_and_applies_flags() {
        let dir = fresh_home("ok");
        let mut a = args(&dir);
        a.p2p.laddr = Some("tcp://127.0.0.1:0".into());
        a.p2p.seed_mode = Some(true);
        a.moniker = Some("flagged".into());
        let p = prepare(&a).unwrap();
        assert_eq!(p.settings.chain_id, "chain-a");
        assert_eq!(p.settings.moniker, "flagged");
        assert!(p.settings.config.p2p.seed_mode);
        assert_eq!(p.settings.listen, "127.0.0.1:0".parse().unwrap());
        a.chain_id = Some("chain-b".into());
        assert_eq!(prepare(&a).unwrap().settings.chain_id, "chain-b");
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn bad_flag_values_are_named() {
        let dir = fresh_home("bad");
        let mut a = args(&dir);
        a.p2p.persistent_peers = Some("nope@127.0.0.1:1".into());
        let err = prepare(&a).unwrap_err().to_string();
        assert!(err.starts_with("p2p.persistent_peers: "), "{err}");
        assert!(err.contains("\"nope@127.0.0.1:1\""), "{err}");
        let mut a = args(&dir);
        a.p2p.laddr = Some("tcp://127.0.0.1".into());
        let err = prepare(&a).unwrap_err().to_string();
        assert!(err.starts_with("p2p.laddr: "), "{err}");
        let mut a = args(&dir);
        a.chain_id = Some(String::new());
        assert!(
            prepare(&a)
                .unwrap_err()
                .to_string()
                .starts_with("chain id \"\"")
        );
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
