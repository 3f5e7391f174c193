//! Images that boot as a full disk through the BIOS, and `socle image
//! import FILE|URL`: raw and qcow2 uploads become encrypted images of the
//! uploader's, VMs boot them, and bad uploads change nothing.

mod common;

use std::io::{Read, Write};
use std::path::PathBuf;
use std::process::Command;
use std::time::Duration;

use base64::Engine;
use common::*;
use serde_json::{json, Value};

const T: Duration = Duration::from_secs(180);

fn socle(cloud: &TestCloud, args: &[&str]) -> std::process::Output {
    cloud.socle().args(args).arg("--data-dir").arg(cloud.data_dir()).output_within(CLI_TIMEOUT)
}

fn image_named(c: &Creds, name: &str) -> Option<Value> {
    let out = call(c, "ReadImages", json!({"Filters": {"ImageNames": [name]}})).ok();
    out["Images"].as_array().unwrap().first().cloned()
}

/// Launches a VM of `image` whose user data prints what `script` prints.
fn vm_of(c: &Creds, image: &str, script: &str) -> String {
    let ud = base64::engine::general_purpose::STANDARD.encode(script);
    let out = call(c, "CreateVms", json!({"ImageId": image, "VmType": SMALL, "UserData": ud})).ok();
    let id = out["Vms"][0]["VmId"].as_str().unwrap().to_string();
    wait_state(c, std::slice::from_ref(&id), "running", T);
    id
}

fn qemu_img(args: &[&str]) {
    let out = Command::new("qemu-img").args(args).output_within(CLI_TIMEOUT);
    assert!(out.status.success(), "qemu-img {args:?}: {}", String::from_utf8_lossy(&out.stderr));
}

/// Serves one file over HTTP on loopback, for as many GETs as come.
fn serve_file(path: PathBuf) -> String {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    std::thread::spawn(move || {
        for stream in listener.incoming().flatten() {
            let path = path.clone();
            std::thread::spawn(move || {
                let mut stream = stream;
                let mut req = [0u8; 4096];
                let _ = stream.read(&mut req);
                let bytes = std::fs::read(&path).unwrap();
                let _ = write!(stream, "HTTP/1.1 200 OK\r\nContent-Length: {}\r\nConnection: close\r\n\r\n", bytes.len());
                let _ = stream.write_all(&bytes);
            });
        }
    });
    format!("http://127.0.0.1:{port}/disk.qcow2")
}

/// Uploads arriving at the server, and held by its host.
fn uploads_left(cloud: &TestCloud) -> Vec<PathBuf> {
    let mut left = files_under(&cloud.data_dir().join("uploads"));
    left.extend(files_under(&cloud.data_dir().join("agent/uploads")));
    left
}

#[test]
fn imported_raw_and_qcow2_disks_boot_through_the_bios_encrypted_at_rest() {
    let cloud = TestCloud::start();
    let c = &cloud.creds;
    let work = tempfile::tempdir().unwrap();

    // The platform's full-disk image boots through SeaBIOS.
    let disk_image = image_named(c, "socle-tiny-disk").expect("socle-tiny-disk is registered");
    let vm = vm_of(c, disk_image["ImageId"].as_str().unwrap(), "#!/bin/sh\necho socle-test: booted\n");
    wait_console(c, &vm, "socle-test: booted", 1, T);
    let console = console(c, &vm);
    assert!(console.contains("SeaBIOS") || console.contains("SYSLINUX"), "not a BIOS boot:\n{console}");

    // A raw disk (that same system) with a marker written past its
    // filesystem; the marker is assembled here so no file holds it whole.
    // The host holds the platform image's files by name, in its agent's state.
    let base = cloud.data_dir().join("agent/images/socle-tiny-disk/disk.qcow2");
    let raw = work.path().join("disk.raw");
    qemu_img(&["convert", "-f", "qcow2", "-O", "raw", base.to_str().unwrap(), raw.to_str().unwrap()]);
    let marker = format!("SOCLE-IMPORT-{}", 40 + 2);
    {
        let mut f = std::fs::OpenOptions::new().write(true).open(&raw).unwrap();
        use std::io::Seek;
        f.seek(std::io::SeekFrom::Start(1000 << 20)).unwrap();
        f.write_all(marker.repeat(1000).as_bytes()).unwrap();
    }
    let out = socle(&cloud, &["image", "import", raw.to_str().unwrap(), "--name", "imported-raw", "--description", "a raw disk"]);
    assert!(out.status.success(), "import failed: {}", String::from_utf8_lossy(&out.stderr));
    let img = image_named(c, "imported-raw").expect("imported-raw is listed");
    assert_eq!(img["State"], "available");
    assert_eq!(img["Description"], "a raw disk");
    assert_eq!(img["BlockDeviceMappings"][0]["Bsu"]["VolumeSize"], 1);
    let reader = "#!/bin/sh\ndd if=/dev/vda bs=1M skip=1000 count=1 2>/dev/null | head -c 16 | sed 's/^/socle-test: read /'; echo\n";
    let vm2 = vm_of(c, img["ImageId"].as_str().unwrap(), reader);
    wait_console(c, &vm2, "socle-test: read SOCLE-IMPORT-42", 1, T);

    // The marker is nowhere in plaintext under the data dir (but in the
    // console log, where the guest printed it), and the upload is gone.
    for f in files_under(cloud.data_dir()).into_iter().filter(|f| !f.ends_with("console.log")) {
        let bytes = std::fs::read(&f).unwrap_or_default();
        assert!(!bytes.windows(marker.len()).any(|w| w == marker.as_bytes()), "{} holds the marker in plaintext", f.display());
    }
    assert!(uploads_left(&cloud).is_empty(), "uploads left: {:?}", uploads_left(&cloud));

    // A qcow2 from a URL (fetched by the CLI, not the cloud).
    let url = serve_file(base.clone());
    let out = socle(&cloud, &["image", "import", &url, "--name", "imported-url", "--json"]);
    assert!(out.status.success(), "import from URL failed: {}", String::from_utf8_lossy(&out.stderr));
    let shown: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(shown["State"], "available");
    let vm3 = vm_of(c, shown["ImageId"].as_str().unwrap(), "#!/bin/sh\necho socle-test: from-url\n");
    wait_console(c, &vm3, "socle-test: from-url", 1, T);

    // Another account neither sees nor launches them.
    let bob = cloud.new_account("bob");
    assert!(image_named(&bob, "imported-raw").is_none());
    call(&bob, "CreateVms", json!({"ImageId": img["ImageId"], "VmType": SMALL})).expect_error(400, "5023");
    // The name is taken now.
    let out = socle(&cloud, &["image", "import", raw.to_str().unwrap(), "--name", "imported-raw"]);
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("4047"), "{}", String::from_utf8_lossy(&out.stderr));
    call(c, "DeleteVms", json!({"VmIds": [vm, vm2, vm3]})).ok();
}

/// Sends an upload signed for `declared` (a SHA-256) with `body`.
fn upload(c: &Creds, name: Option<&str>, body: &[u8], declared: &str) -> Answer {
    let url = format!("{}/ImportImage", c.endpoint.trim_end_matches('/'));
    let rest = url.split_once("://").unwrap().1;
    let (host, path) = rest.split_at(rest.find('/').unwrap());
    let creds = socle_auth::Credentials { access_key: &c.access_key, secret_key: &c.secret_key, region: &c.region };
    let extra: Vec<(&str, &str)> = name.map(|n| ("x-socle-image-name", n)).into_iter().collect();
    let mut req = ureq::post(&url).timeout(Duration::from_secs(60));
    for (k, v) in socle_auth::sign_osc4_streaming(&creds, host, path, &extra, declared, time::OffsetDateTime::now_utc()) {
        req = req.set(&k, &v);
    }
    if name.is_none() {
        req = req.set("x-socle-image-name", "unsigned-name");
    }
    match req.send_bytes(body) {
        Ok(r) => Answer { status: r.status(), body: r.into_json().unwrap_or(Value::Null) },
        Err(ureq::Error::Status(status, r)) => Answer { status, body: r.into_json().unwrap_or(Value::Null) },
        Err(e) => panic!("transport error: {e}"),
    }
}

#[test]
fn bad_uploads_are_refused_and_leave_nothing() {
    let cloud = TestCloud::start();
    let c = &cloud.creds;
    let work = tempfile::tempdir().unwrap();
    let images_before = call(c, "ReadImages", json!({})).ok()["Images"].as_array().unwrap().len();
    let snaps_before = call(c, "ReadSnapshots", json!({})).ok()["Snapshots"].as_array().unwrap().len();

    // A qcow2 whose backing file is a host file: it must never be read.
    let evil = work.path().join("evil.qcow2");
    qemu_img(&["create", "-q", "-f", "qcow2", "-b", "/etc/hostname", "-F", "raw", evil.to_str().unwrap(), "1M"]);
    // Not an image at all; a VMDK; an empty file.
    let junk = work.path().join("junk.img");
    std::fs::write(&junk, b"this is not a disk image, only text".repeat(100)).unwrap();
    let vmdk = work.path().join("disk.vmdk");
    qemu_img(&["create", "-q", "-f", "vmdk", vmdk.to_str().unwrap(), "16M"]);
    let empty = work.path().join("empty.img");
    std::fs::write(&empty, b"").unwrap();
    for (file, why) in [(&evil, "backing file"), (&junk, "not a disk image"), (&vmdk, "vmdk"), (&empty, "empty")] {
        let out = socle(&cloud, &["image", "import", file.to_str().unwrap(), "--name", "bad-one"]);
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(!out.status.success(), "{} was accepted", file.display());
        assert!(err.contains(why), "{}: no {why:?} in {err}", file.display());
    }
    let out = socle(&cloud, &["image", "import", "/nonexistent/disk.img", "--name", "bad-one"]);
    assert!(!out.status.success());
    // Bad names are refused before a byte is read.
    let out = socle(&cloud, &["image", "import", junk.to_str().unwrap(), "--name", "x"]);
    assert!(String::from_utf8_lossy(&out.stderr).contains("4106"), "{}", String::from_utf8_lossy(&out.stderr));

    // The body must match the signed hash; the name must be signed; an
    // unsigned or wrongly signed upload is refused.
    let body = std::fs::read(&junk).unwrap();
    let other_hash = socle_auth::hex_sha256(b"something else");
    upload(c, Some("tampered"), &body, &other_hash).expect_error(400, "4047");
    upload(c, None, &body, &socle_auth::hex_sha256(&body)).expect_error(401, "1");
    let mut wrong = c.clone();
    wrong.secret_key = "not-the-secret-key-of-this-account-00000".into();
    upload(&wrong, Some("forged"), &body, &socle_auth::hex_sha256(&body)).expect_error(401, "1");
    let ans = raw_call(&c.endpoint, None, "ImportImage", &body, &[]);
    assert!(ans.status == 400 || ans.status == 401, "unsigned upload: {ans:?}");

    // A pool too small for the image: refused before the upload is stored.
    let big = work.path().join("big.raw");
    std::fs::File::create(&big).unwrap().set_len(2 << 30).unwrap();
    drop(cloud);
    let mut cloud = TestCloud::start();
    cloud.stop_clean();
    cloud.launch(&["--storage-capacity-gib", "1"]);
    let out = socle(&cloud, &["image", "import", big.to_str().unwrap(), "--name", "too-big"]);
    assert!(String::from_utf8_lossy(&out.stderr).contains("10024"), "{}", String::from_utf8_lossy(&out.stderr));

    let c = &cloud.creds;
    assert!(uploads_left(&cloud).is_empty(), "uploads left: {:?}", uploads_left(&cloud));
    assert_eq!(call(c, "ReadSnapshots", json!({})).ok()["Snapshots"].as_array().unwrap().len(), snaps_before);
    assert_eq!(call(c, "ReadImages", json!({})).ok()["Images"].as_array().unwrap().len(), images_before);
}
