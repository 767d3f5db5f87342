//! `asoc derive-key`: the per-cluster key of RFC-0002 §8.2,
//! PBKDF2-HMAC-SHA256(master key bytes, cluster name, 100,000 iterations),
//! printed as 64 lower-case hex characters, which are the key to use.

use asoc_proto::auth::derive_cluster_key;
use zeroize::Zeroizing;

use crate::cli::DeriveKeyArgs;
use crate::error::{CliError, CliResult};
use crate::output::hex;
use crate::secrets;

pub(crate) fn run(args: &DeriveKeyArgs) -> CliResult {
    if args.cluster.is_empty() {
        return Err(CliError::usage("--cluster must not be empty"));
    }
    let master = secrets::master_key(args.master_key_file.as_deref(), args.weak_key)?;
    let key = derive_cluster_key(&master, &args.cluster);
    let text = Zeroizing::new(hex(key.as_ref()));
    println!("{}", text.as_str());
    Ok(())
}
