//! Deterministic writer for the cpio "newc" format the Linux kernel unpacks as
//! an initramfs. Written by hand so that the archive is byte-for-byte
//! reproducible (fixed mtime, uid/gid 0, sequential inode numbers) and can hold
//! device nodes (`/dev/console`) without needing root or mknod on the host.

const S_IFDIR: u32 = 0o040000;
const S_IFREG: u32 = 0o100000;
const S_IFLNK: u32 = 0o120000;
const S_IFCHR: u32 = 0o020000;

#[derive(Default)]
pub(crate) struct CpioWriter {
    out: Vec<u8>,
    next_ino: u32,
}

impl CpioWriter {
    pub(crate) fn new() -> Self {
        CpioWriter {
            out: Vec::new(),
            next_ino: 1,
        }
    }

    pub(crate) fn dir(&mut self, name: &str, perm: u32) {
        self.entry(name, S_IFDIR | perm, 2, (0, 0), &[]);
    }

    pub(crate) fn file(&mut self, name: &str, perm: u32, data: &[u8]) {
        self.entry(name, S_IFREG | perm, 1, (0, 0), data);
    }

    pub(crate) fn symlink(&mut self, name: &str, target: &str) {
        self.entry(name, S_IFLNK | 0o777, 1, (0, 0), target.as_bytes());
    }

    pub(crate) fn char_dev(&mut self, name: &str, perm: u32, major: u32, minor: u32) {
        self.entry(name, S_IFCHR | perm, 1, (major, minor), &[]);
    }

    /// Appends the trailer and returns the archive.
    pub(crate) fn finish(mut self) -> Vec<u8> {
        self.header("TRAILER!!!", 0, 0, 1, (0, 0), 0);
        self.pad();
        self.out
    }

    fn entry(&mut self, name: &str, mode: u32, nlink: u32, rdev: (u32, u32), data: &[u8]) {
        let ino = self.next_ino;
        self.next_ino += 1;
        self.header(name, ino, mode, nlink, rdev, data.len());
        self.out.extend_from_slice(data);
        self.pad();
    }

    fn header(
        &mut self,
        name: &str,
        ino: u32,
        mode: u32,
        nlink: u32,
        rdev: (u32, u32),
        size: usize,
    ) {
        let name = name.trim_start_matches('/');
        let fields = [
            ino,
            mode,
            0, // uid
            0, // gid
            nlink,
            0, // mtime: fixed for reproducibility
            size as u32,
            0, // dev major
            0, // dev minor
            rdev.0,
            rdev.1,
            name.len() as u32 + 1, // name size, NUL included
            0,                     // checksum (unused by "newc")
        ];
        self.out.extend_from_slice(b"070701");
        for f in fields {
            self.out.extend_from_slice(format!("{f:08x}").as_bytes());
        }
        self.out.extend_from_slice(name.as_bytes());
        self.out.push(0);
        self.pad();
    }

    /// newc aligns every header+name and every file body to 4 bytes.
    fn pad(&mut self) {
        while self.out.len() % 4 != 0 {
            self.out.push(0);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn layout_is_aligned_and_ends_with_trailer() {
        let mut w = CpioWriter::new();
        w.dir("bin", 0o755);
        w.file("bin/x", 0o755, b"hello");
        w.symlink("init", "bin/x");
        w.char_dev("dev/console", 0o600, 5, 1);
        let a = w.finish();
        assert_eq!(a.len() % 4, 0);
        assert!(a.starts_with(b"070701"));
        let s = String::from_utf8_lossy(&a);
        assert!(s.contains("TRAILER!!!"));
        assert!(s.contains("bin/x\0"));
        // header of the first entry: ino 1, mode 040755
        assert_eq!(&a[6..22], b"00000001000041ed");
    }
}
