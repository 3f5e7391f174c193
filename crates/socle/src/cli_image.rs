//! `socle image …`: list images, and import a disk image (raw or qcow2) from
//! a file or a URL, with progress bars.
//!
//! A URL is fetched by this command, not by the cloud: the cloud never
//! reaches out to addresses users choose, and what is sent is hashed and
//! signed like any request.

use std::io::{Read, Seek, Write};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use anyhow::{anyhow, bail, Context};
use indicatif::{ProgressBar, ProgressStyle};
use serde_json::{json, Value};
use sha2::{Digest, Sha256};

use crate::client::{Client, ClientArgs};

#[derive(clap::Subcommand)]
pub enum ImageCommand {
    /// Import a raw or qcow2 disk image (a cloud image with its own
    /// bootloader: VMs boot it through the BIOS).
    Import {
        #[command(flatten)]
        client: ClientArgs,
        /// A file, or an http(s) URL this command downloads first.
        source: String,
        /// The image's name (unique in your account).
        #[arg(long)]
        name: String,
        #[arg(long, default_value = "")]
        description: String,
        /// Return once uploaded, without waiting for the image to be available.
        #[arg(long)]
        no_wait: bool,
        /// Give up waiting after this many seconds (the conversion goes on
        /// in the cloud; `socle image list` shows when it is available).
        #[arg(long, default_value_t = 3600, value_name = "SECONDS")]
        wait_timeout: u64,
    },
    /// List the images you can use.
    List {
        #[command(flatten)]
        client: ClientArgs,
    },
}

pub fn run(cmd: ImageCommand) -> anyhow::Result<()> {
    match cmd {
        ImageCommand::Import { client, source, name, description, no_wait, wait_timeout } => {
            let json_out = client.json;
            let client = Client::from_args(&client)?;
            let wait = (!no_wait).then(|| Duration::from_secs(wait_timeout));
            let image = import(&client, &source, &name, &description, wait)?;
            if json_out {
                println!("{}", serde_json::to_string_pretty(&image)?);
            } else {
                println!("{}\t{}\t{}", image["ImageId"].as_str().unwrap_or("?"), image["State"].as_str().unwrap_or("?"), name);
            }
            Ok(())
        }
        ImageCommand::List { client } => {
            let json_out = client.json;
            let client = Client::from_args(&client)?;
            let images = client.call("ReadImages", &json!({}))?["Images"].clone();
            if json_out {
                println!("{}", serde_json::to_string_pretty(&images)?);
                return Ok(());
            }
            let mut table = comfy_table::Table::new();
            table.load_preset(comfy_table::presets::NOTHING).set_header(["IMAGE ID", "NAME", "STATE", "OWNER", "SIZE GiB", "BOOT"]);
            for i in images.as_array().into_iter().flatten() {
                let size = i["BlockDeviceMappings"][0]["Bsu"]["VolumeSize"].as_i64().map(|s| s.to_string()).unwrap_or_default();
                table.add_row([
                    i["ImageId"].as_str().unwrap_or(""),
                    i["ImageName"].as_str().unwrap_or(""),
                    i["State"].as_str().unwrap_or(""),
                    i["AccountAlias"].as_str().filter(|a| !a.is_empty()).or(i["AccountId"].as_str()).unwrap_or(""),
                    &size,
                    i["BootModes"][0].as_str().unwrap_or(""),
                ]);
            }
            println!("{table}");
            Ok(())
        }
    }
}

fn bar(len: Option<u64>, what: &str) -> ProgressBar {
    let pb = match len {
        Some(n) => ProgressBar::new(n).with_style(
            ProgressStyle::with_template("{msg:12} [{bar:40}] {bytes}/{total_bytes} {bytes_per_sec} eta {eta}")
                .expect("valid template")
                .progress_chars("=> "),
        ),
        None => ProgressBar::new_spinner().with_style(ProgressStyle::with_template("{msg:12} {spinner} {bytes} {bytes_per_sec}").expect("valid template")),
    };
    pb.set_message(what.to_string());
    pb
}

/// Counts what goes through a reader on a progress bar.
struct Counted<R> {
    inner: R,
    pb: ProgressBar,
}

impl<R: Read> Read for Counted<R> {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        let n = self.inner.read(buf)?;
        self.pb.inc(n as u64);
        Ok(n)
    }
}

/// Downloads `url` into a temporary file (removed when dropped), hashing it.
fn download(url: &str) -> anyhow::Result<(tempfile::NamedTempFile, u64, String)> {
    let resp = ureq::AgentBuilder::new()
        .timeout_connect(Duration::from_secs(10))
        .timeout_read(Duration::from_secs(60))
        .build()
        .get(url)
        .call()
        .map_err(|e| anyhow!("cannot download {url}: {e}"))?;
    let len = resp.header("Content-Length").and_then(|l| l.parse().ok());
    let pb = bar(len, "downloading");
    let mut reader = Counted { inner: resp.into_reader(), pb: pb.clone() };
    let mut tmp = tempfile::NamedTempFile::new().context("cannot create a temporary file for the download")?;
    let mut hasher = Sha256::new();
    let mut buf = vec![0u8; 1 << 20];
    let mut total = 0u64;
    loop {
        let n = reader.read(&mut buf).with_context(|| format!("download of {url} interrupted"))?;
        if n == 0 {
            break;
        }
        hasher.update(&buf[..n]);
        tmp.write_all(&buf[..n]).context("cannot write the download")?;
        total += n as u64;
    }
    if len.is_some_and(|l| l != total) {
        bail!("download of {url} stopped after {total} bytes of {}", len.unwrap_or(0));
    }
    pb.finish_and_clear();
    tmp.flush()?;
    Ok((tmp, total, hex::encode(hasher.finalize())))
}

/// Hashes a local file (the signature covers the hash of what is sent).
fn hash_file(path: &Path) -> anyhow::Result<(u64, String)> {
    let file = std::fs::File::open(path).with_context(|| format!("cannot open {}", path.display()))?;
    let len = file.metadata()?.len();
    let pb = bar(Some(len), "checking");
    let mut reader = Counted { inner: std::io::BufReader::with_capacity(1 << 20, file), pb: pb.clone() };
    let mut hasher = Sha256::new();
    std::io::copy(&mut reader, &mut hasher).with_context(|| format!("cannot read {}", path.display()))?;
    pb.finish_and_clear();
    Ok((len, hex::encode(hasher.finalize())))
}

/// Uploads `source` as an image; with `wait`, then waits at most that long
/// for it to be available.
fn import(client: &Client, source: &str, name: &str, description: &str, wait: Option<Duration>) -> anyhow::Result<Value> {
    let started = Instant::now();
    let is_url = source.starts_with("http://") || source.starts_with("https://");
    let (mut file, len, hash, _download) = if is_url {
        let (tmp, len, hash) = download(source)?;
        (tmp.reopen()?, len, hash, Some(tmp))
    } else {
        let path = PathBuf::from(source);
        let (len, hash) = hash_file(&path)?;
        (std::fs::File::open(&path)?, len, hash, None)
    };
    if len == 0 {
        bail!("{source} is empty");
    }
    file.rewind()?;
    let pb = bar(Some(len), "uploading");
    let body = Counted { inner: std::io::BufReader::with_capacity(1 << 20, file), pb: pb.clone() };
    let mut headers = vec![("x-socle-image-name", name)];
    if !description.is_empty() {
        headers.push(("x-socle-image-description", description));
    }
    let answer = client.upload("ImportImage", &headers, body, len, &hash);
    pb.finish_and_clear();
    let image = answer?["Image"].clone();
    let id = image["ImageId"].as_str().ok_or_else(|| anyhow!("the answer has no ImageId: {image}"))?.to_string();
    eprintln!("uploaded {} MiB in {:.1} s as {id}", len >> 20, started.elapsed().as_secs_f64());
    let Some(wait) = wait else {
        return Ok(image);
    };
    let deadline = Instant::now() + wait;
    let spinner = ProgressBar::new_spinner().with_message(format!("converting {id} (encrypting it for your account)"));
    spinner.enable_steady_tick(Duration::from_millis(200));
    loop {
        let images = client.call("ReadImages", &json!({"Filters": {"ImageIds": [id]}}))?;
        let image = images["Images"][0].clone();
        match image["State"].as_str() {
            Some("available") => {
                spinner.finish_and_clear();
                eprintln!("{id} is available ({:.1} s in all)", started.elapsed().as_secs_f64());
                return Ok(image);
            }
            Some("failed") => {
                spinner.finish_and_clear();
                bail!("the import of {id} failed; the operator log has details");
            }
            None => bail!("{id} disappeared"),
            Some(state) if Instant::now() >= deadline => {
                spinner.finish_and_clear();
                bail!(
                    "{id} is still {state} after {} s; the conversion goes on in the cloud (`socle image list` shows when it is available)",
                    wait.as_secs()
                );
            }
            _ => std::thread::sleep(Duration::from_millis(500)),
        }
    }
}
