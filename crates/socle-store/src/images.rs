//! Machine images (OMIs). Platform images (like `socle-tiny`) belong to the
//! platform account and are public; account images arrive with the storage
//! issue.

use crate::params;
use crate::db::{Conn, OptionalExtension, Row};
use socle_types::ids::{AccountId, ImageId};

use crate::Result;

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ImageRow {
    pub image_id: ImageId,
    pub account_id: AccountId,
    pub name: String,
    pub description: String,
    pub state: String,
    pub architecture: String,
    /// The platform image (by name) whose kernel QEMU loads directly to
    /// boot it; None: the firmware boots the root disk's own boot loader.
    pub boot_kernel: Option<String>,
    /// The platform image (by name) whose disk its VMs' root disks start
    /// from; None for an image made from a VM or imported (its root
    /// snapshot is that disk). Every host holds platform images itself.
    pub base_image: Option<String>,
    pub is_public: bool,
    pub created_at: String,
    /// Virtual size of the disk: the smallest root volume made from it.
    pub size_gib: i64,
    /// For an image made from a VM: the snapshot of its root disk (encrypted,
    /// owned by the image's owner). Root volumes of new VMs copy it.
    pub root_snapshot_id: Option<String>,
}

const COLUMNS: &str = "image_id, account_id, name, description, state, architecture, boot_kernel, \
                       base_image, is_public, created_at, size_gib, root_snapshot_id";

fn from_row(r: &Row) -> crate::Result<ImageRow> {
    Ok(ImageRow {
        image_id: ImageId::from_trusted(r.get(0)?),
        account_id: AccountId::from_trusted(r.get(1)?),
        name: r.get(2)?,
        description: r.get(3)?,
        state: r.get(4)?,
        architecture: r.get(5)?,
        boot_kernel: r.get(6)?,
        base_image: r.get(7)?,
        is_public: r.get(8)?,
        created_at: r.get(9)?,
        size_gib: r.get(10)?,
        root_snapshot_id: r.get(11)?,
    })
}

pub fn insert(conn: &Conn, i: &ImageRow) -> Result<()> {
    conn.execute(
        &format!("INSERT INTO images ({COLUMNS}) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12)"),
        params![
            i.image_id.as_str(),
            i.account_id.as_str(),
            i.name,
            i.description,
            i.state,
            i.architecture,
            i.boot_kernel,
            i.base_image,
            i.is_public,
            i.created_at,
            i.size_gib,
            i.root_snapshot_id
        ],
    )?;
    Ok(())
}

/// What `account` (?1) may see and launch: its own images, public ones, and
/// ones shared with it.
const VISIBLE: &str = "(account_id = ?1 OR is_public = 1 OR image_id IN
                         (SELECT image_id FROM image_shares WHERE account_id = ?1))";

/// What [`crate::listing::Listing::visible`] needs to list the images an
/// account may see (every `?` is that account).
pub const VISIBLE_TO: &str =
    "account_id = ? OR is_public = 1 OR image_id IN (SELECT image_id FROM image_shares WHERE account_id = ?)";

/// An image's state as users see it, in SQL: one made from a VM (a root
/// snapshot) is pending until that snapshot completes, failed if it failed
/// or is gone (see the control plane's `effective_state`).
pub const EFFECTIVE_STATE: &str = "CASE WHEN root_snapshot_id IS NULL THEN state ELSE COALESCE(\
     (SELECT CASE s.state WHEN 'completed' THEN 'available' WHEN 'error' THEN 'failed' ELSE 'pending' END \
      FROM snapshots s WHERE s.snapshot_id = images.root_snapshot_id), 'failed') END";

/// One page of the images `listing` selects (see [`crate::listing`]).
pub fn page(conn: &Conn, listing: &crate::listing::Listing, after: Option<&crate::listing::After>, limit: i64) -> Result<Vec<ImageRow>> {
    listing.page(conn, COLUMNS, after, limit, from_row)
}

/// One image if `account` may see it.
pub fn get_visible(conn: &Conn, account: &AccountId, id: &ImageId) -> Result<Option<ImageRow>> {
    Ok(conn
        .query_row(
            &format!("SELECT {COLUMNS} FROM images WHERE image_id = ?2 AND {VISIBLE}"),
            params![account.as_str(), id.as_str()],
            from_row,
        )
        .optional()?)
}

pub fn get_by_owner_and_name(conn: &Conn, owner: &AccountId, name: &str) -> Result<Option<ImageRow>> {
    Ok(conn
        .query_row(
            &format!("SELECT {COLUMNS} FROM images WHERE account_id = ?1 AND name = ?2"),
            params![owner.as_str(), name],
            from_row,
        )
        .optional()?)
}

/// An image by ID regardless of owner: for the host side, which boots what
/// the control plane already authorised.
pub fn get(conn: &Conn, id: &ImageId) -> Result<Option<ImageRow>> {
    Ok(conn
        .query_row(&format!("SELECT {COLUMNS} FROM images WHERE image_id = ?1"), [id.as_str()], from_row)
        .optional()?)
}

/// Saves the mutable columns (description, visibility, state).
pub fn update(conn: &Conn, i: &ImageRow) -> Result<()> {
    conn.execute(
        "UPDATE images SET description = ?2, is_public = ?3, state = ?4 WHERE image_id = ?1",
        params![i.image_id.as_str(), i.description, i.is_public, i.state],
    )?;
    Ok(())
}

pub fn delete(conn: &Conn, id: &ImageId) -> Result<()> {
    conn.execute("DELETE FROM images WHERE image_id = ?1", [id.as_str()])?;
    Ok(())
}

/// An image of `account` by name (names are unique per owner).
pub fn name_taken(conn: &Conn, owner: &AccountId, name: &str) -> Result<bool> {
    Ok(get_by_owner_and_name(conn, owner, name)?.is_some())
}

pub fn shares(conn: &Conn, id: &ImageId) -> Result<Vec<String>> {
    let mut stmt = conn.prepare("SELECT account_id FROM image_shares WHERE image_id = ?1 ORDER BY account_id")?;
    let rows = stmt.query_map([id.as_str()], |r| r.get(0))?.collect::<crate::Result<Vec<_>>>()?;
    Ok(rows)
}

pub fn add_share(conn: &Conn, id: &ImageId, account: &str) -> Result<()> {
    conn.execute("INSERT INTO image_shares (image_id, account_id) VALUES (?1, ?2) ON CONFLICT DO NOTHING", params![id.as_str(), account])?;
    Ok(())
}

pub fn remove_share(conn: &Conn, id: &ImageId, account: &str) -> Result<()> {
    conn.execute("DELETE FROM image_shares WHERE image_id = ?1 AND account_id = ?2", params![id.as_str(), account])?;
    Ok(())
}

/// Images whose root disk is this snapshot (a snapshot in use cannot go).
pub fn using_snapshot(conn: &Conn, snapshot_id: &str) -> Result<Vec<String>> {
    let mut stmt = conn.prepare("SELECT image_id FROM images WHERE root_snapshot_id = ?1")?;
    let rows = stmt.query_map([snapshot_id], |r| r.get(0))?.collect::<crate::Result<Vec<_>>>()?;
    Ok(rows)
}
