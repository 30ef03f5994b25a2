//! `herald vapid-key`: make the P-256 key Web Push signs with, and print its public half.

use std::io::Write;
use std::os::unix::fs::OpenOptionsExt;
use std::path::PathBuf;

use herald::push::VapidKey;

#[derive(clap::Args, Debug)]
pub struct VapidKeyArgs {
    /// Where to write the private key (PEM, readable by its owner only); never an existing file
    #[arg(long, value_name = "FILE")]
    out: PathBuf,
}

/// Writes a new key to `--out` and prints its public key, as `GET /api/push/public-key` will.
pub fn make(args: VapidKeyArgs) -> anyhow::Result<()> {
    let key = VapidKey::generate().map_err(anyhow::Error::msg)?;
    let pem = key.to_pem().map_err(anyhow::Error::msg)?;
    let path = args.out.display();
    // Every browser subscription is bound to the key it was made with, so a key in use is
    // never replaced.
    let mut file = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(&args.out)
        .map_err(|error| match error.kind() {
            std::io::ErrorKind::AlreadyExists => anyhow::anyhow!(
                "{path} already exists: browser subscriptions are bound to the key they were made with, so herald does not replace one"
            ),
            _ => anyhow::anyhow!("cannot create {path}: {error}"),
        })?;
    if let Err(error) = file
        .write_all(pem.as_bytes())
        .and_then(|()| file.sync_all())
    {
        // A half-written key would only block the next try.
        let _ = std::fs::remove_file(&args.out);
        return Err(anyhow::anyhow!("cannot write {path}: {error}"));
    }
    println!("{}", key.public_key());
    Ok(())
}
