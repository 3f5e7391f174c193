//! The engine seam: one handle, [`Conn`], over SQLite and PostgreSQL.
//!
//! Every query of the store takes a `&Conn`, which always stands inside a
//! transaction (see [`crate::Store::read`] and [`crate::Store::write`]).
//! Queries are written once, in the SQL both engines share, with SQLite's
//! `?N` placeholders; on PostgreSQL they are rewritten to `$N` (once per
//! connection: statements are prepared and cached per connection).
//!
//! Values cross the seam as [`Value`]s: integers (booleans are 0/1 integers
//! in both schemas), text, blobs, floats and NULL. Rows come back owned, so
//! the result of a query never borrows the connection.

use std::cell::RefCell;
use std::collections::HashMap;
use std::sync::Arc;

use crate::{Result, StoreError};

/// A value bound to a statement or read from a row.
#[derive(Debug, Clone, PartialEq)]
pub enum Value {
    Null,
    Int(i64),
    Real(f64),
    Text(String),
    Blob(Vec<u8>),
}

/// Something that can be bound to a placeholder.
pub trait ToValue {
    fn to_value(&self) -> Value;
}

impl<T: ToValue + ?Sized> ToValue for &T {
    fn to_value(&self) -> Value {
        (**self).to_value()
    }
}
impl ToValue for str {
    fn to_value(&self) -> Value {
        Value::Text(self.to_owned())
    }
}
impl ToValue for String {
    fn to_value(&self) -> Value {
        Value::Text(self.clone())
    }
}
impl ToValue for [u8] {
    fn to_value(&self) -> Value {
        Value::Blob(self.to_vec())
    }
}
impl ToValue for Vec<u8> {
    fn to_value(&self) -> Value {
        Value::Blob(self.clone())
    }
}
impl ToValue for bool {
    fn to_value(&self) -> Value {
        Value::Int(i64::from(*self))
    }
}
impl ToValue for f64 {
    fn to_value(&self) -> Value {
        Value::Real(*self)
    }
}
impl ToValue for Value {
    fn to_value(&self) -> Value {
        self.clone()
    }
}
impl<T: ToValue> ToValue for Option<T> {
    fn to_value(&self) -> Value {
        match self {
            Some(v) => v.to_value(),
            None => Value::Null,
        }
    }
}
macro_rules! int_to_value {
    ($($t:ty),*) => {$(
        impl ToValue for $t {
            fn to_value(&self) -> Value {
                Value::Int(i64::try_from(*self).expect("integer fits in i64"))
            }
        }
    )*};
}
int_to_value!(i8, i16, i32, i64, u8, u16, u32, u64, usize);

/// Something read back from a column.
pub trait FromValue: Sized {
    fn from_value(v: &Value) -> Result<Self>;
}

fn wrong_type(v: &Value, wanted: &str) -> StoreError {
    StoreError::Column(format!("expected {wanted}, found {v:?}"))
}

impl FromValue for Value {
    fn from_value(v: &Value) -> Result<Self> {
        Ok(v.clone())
    }
}
impl FromValue for String {
    fn from_value(v: &Value) -> Result<Self> {
        match v {
            Value::Text(s) => Ok(s.clone()),
            _ => Err(wrong_type(v, "text")),
        }
    }
}
impl FromValue for Vec<u8> {
    fn from_value(v: &Value) -> Result<Self> {
        match v {
            Value::Blob(b) => Ok(b.clone()),
            Value::Text(s) => Ok(s.as_bytes().to_vec()),
            _ => Err(wrong_type(v, "blob")),
        }
    }
}
impl FromValue for bool {
    fn from_value(v: &Value) -> Result<Self> {
        match v {
            Value::Int(i) => Ok(*i != 0),
            _ => Err(wrong_type(v, "boolean")),
        }
    }
}
impl FromValue for f64 {
    fn from_value(v: &Value) -> Result<Self> {
        match v {
            Value::Real(f) => Ok(*f),
            Value::Int(i) => Ok(*i as f64),
            _ => Err(wrong_type(v, "real")),
        }
    }
}
impl<T: FromValue> FromValue for Option<T> {
    fn from_value(v: &Value) -> Result<Self> {
        match v {
            Value::Null => Ok(None),
            v => T::from_value(v).map(Some),
        }
    }
}
macro_rules! int_from_value {
    ($($t:ty),*) => {$(
        impl FromValue for $t {
            fn from_value(v: &Value) -> Result<Self> {
                match v {
                    Value::Int(i) => <$t>::try_from(*i)
                        .map_err(|_| StoreError::Column(format!("{i} out of range for {}", stringify!($t)))),
                    _ => Err(wrong_type(v, stringify!($t))),
                }
            }
        }
    )*};
}
int_from_value!(i8, i16, i32, i64, u8, u16, u32, u64, usize);

/// The placeholders' values of one statement.
pub trait Params {
    fn values(&self) -> Vec<Value>;
}

impl Params for () {
    fn values(&self) -> Vec<Value> {
        Vec::new()
    }
}
impl Params for [&dyn ToValue; 0] {
    fn values(&self) -> Vec<Value> {
        Vec::new()
    }
}
impl Params for &[&dyn ToValue] {
    fn values(&self) -> Vec<Value> {
        self.iter().map(|v| v.to_value()).collect()
    }
}
impl Params for Vec<Value> {
    fn values(&self) -> Vec<Value> {
        self.clone()
    }
}
macro_rules! array_params {
    ($($n:literal),*) => {$(
        impl<T: ToValue> Params for [T; $n] {
            fn values(&self) -> Vec<Value> {
                self.iter().map(|v| v.to_value()).collect()
            }
        }
    )*};
}
array_params!(1, 2, 3, 4, 5, 6, 7, 8);
macro_rules! tuple_params {
    ($(($($t:ident $i:tt),*)),*) => {$(
        impl<$($t: ToValue),*> Params for ($($t,)*) {
            fn values(&self) -> Vec<Value> {
                vec![$(self.$i.to_value()),*]
            }
        }
    )*};
}
tuple_params!((A 0), (A 0, B 1), (A 0, B 1, C 2), (A 0, B 1, C 2, D 3), (A 0, B 1, C 2, D 3, E 4));

/// Heterogeneous parameters: `params![id.as_str(), 3, true]`.
#[macro_export]
macro_rules! params {
    () => { &[] as &[&dyn $crate::db::ToValue] };
    ($($x:expr),+ $(,)?) => { &[$(&$x as &dyn $crate::db::ToValue),+] as &[&dyn $crate::db::ToValue] };
}

/// Where a column is found: by position or by name.
pub trait RowIndex {
    fn index(&self, row: &Row) -> Result<usize>;
}
impl RowIndex for usize {
    fn index(&self, row: &Row) -> Result<usize> {
        if *self < row.values.len() {
            Ok(*self)
        } else {
            Err(StoreError::Column(format!("no column {self}")))
        }
    }
}
impl RowIndex for &str {
    fn index(&self, row: &Row) -> Result<usize> {
        row.columns
            .iter()
            .position(|c| c.eq_ignore_ascii_case(self))
            .ok_or_else(|| StoreError::Column(format!("no column {self}")))
    }
}

/// One row of a result, owned.
#[derive(Debug, Clone)]
pub struct Row {
    columns: Arc<[String]>,
    values: Vec<Value>,
}

impl Row {
    pub fn get<I: RowIndex, T: FromValue>(&self, idx: I) -> Result<T> {
        let i = idx.index(self)?;
        T::from_value(&self.values[i])
            .map_err(|e| StoreError::Column(format!("column {} ({}): {e}", i, self.columns[i])))
    }
}

/// Turns "no row" into `None`, as rusqlite's extension of the same name.
pub trait OptionalExtension<T> {
    fn optional(self) -> Result<Option<T>>;
}
impl<T> OptionalExtension<T> for Result<T> {
    fn optional(self) -> Result<Option<T>> {
        match self {
            Ok(v) => Ok(Some(v)),
            Err(StoreError::NoRows) => Ok(None),
            Err(e) => Err(e),
        }
    }
}

/// Which engine a handle talks to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Engine {
    Sqlite,
    Postgres,
}

/// Prepared statements kept per PostgreSQL session.
const MAX_CACHED_STATEMENTS: usize = 512;

pub(crate) struct PgSession {
    pub(crate) client: postgres::Client,
    statements: HashMap<String, postgres::Statement>,
}

impl PgSession {
    pub(crate) fn new(client: postgres::Client) -> PgSession {
        PgSession { client, statements: HashMap::new() }
    }
}

pub(crate) struct PgTx<'a> {
    tx: postgres::Transaction<'a>,
    statements: &'a mut HashMap<String, postgres::Statement>,
}

/// How one PostgreSQL transaction ended.
pub(crate) enum PgOutcome<T> {
    /// Committed or rolled back as asked; `T` is what the body returned.
    Done(T),
    /// Lost a serialization race: rolled back, may be run again.
    Retry(StoreError),
    /// Could not begin: nothing ran (the session is likely broken).
    NotStarted(StoreError),
    /// Could not end (the session is likely broken).
    Failed(StoreError),
}

/// Runs `body` in one transaction of `session` (SERIALIZABLE, so that
/// check-then-write sequences hold as on SQLite, or READ ONLY for reads);
/// `body` returns its result and whether to commit.
pub(crate) fn pg_transaction<T, E>(
    session: &mut PgSession,
    read_only: bool,
    body: impl FnOnce(&Conn) -> (Result<T, E>, bool),
) -> PgOutcome<Result<T, E>> {
    let PgSession { client, statements } = session;
    let tx = match client
        .build_transaction()
        .isolation_level(if read_only {
            postgres::IsolationLevel::RepeatableRead
        } else {
            postgres::IsolationLevel::Serializable
        })
        .read_only(read_only)
        .start()
    {
        Ok(tx) => tx,
        Err(e) => return PgOutcome::NotStarted(e.into()),
    };
    let conn = Conn {
        inner: Inner::Postgres(RefCell::new(PgTx { tx, statements })),
        lost_race: std::cell::Cell::new(false),
    };
    let (out, commit) = body(&conn);
    let lost_race = conn.lost_race.take();
    let Inner::Postgres(cell) = conn.inner else { unreachable!("a PostgreSQL handle") };
    let PgTx { tx, .. } = cell.into_inner();
    if lost_race {
        let _ = tx.rollback();
        return PgOutcome::Retry(StoreError::Contention("a statement lost a serialization race".into()));
    }
    let end = if commit { tx.commit() } else { tx.rollback() };
    match end {
        Ok(()) => PgOutcome::Done(out),
        Err(e) => {
            let e = StoreError::from(e);
            if e.is_serialization_failure() {
                PgOutcome::Retry(e)
            } else {
                PgOutcome::Failed(e)
            }
        }
    }
}

enum Inner<'a> {
    Sqlite(&'a rusqlite::Connection),
    Postgres(RefCell<PgTx<'a>>),
}

/// A database handle inside a transaction: what every query takes.
pub struct Conn<'a> {
    inner: Inner<'a>,
    /// Set when a statement lost a serialization race: the whole
    /// transaction is then run again, whatever its body made of the error.
    lost_race: std::cell::Cell<bool>,
}

impl<'a> Conn<'a> {
    pub(crate) fn sqlite(c: &'a rusqlite::Connection) -> Conn<'a> {
        Conn { inner: Inner::Sqlite(c), lost_race: std::cell::Cell::new(false) }
    }

    pub fn engine(&self) -> Engine {
        match self.inner {
            Inner::Sqlite(_) => Engine::Sqlite,
            Inner::Postgres(_) => Engine::Postgres,
        }
    }

    /// Runs one statement; returns the number of rows it changed.
    pub fn execute(&self, sql: &str, params: impl Params) -> Result<usize> {
        let values = params.values();
        match &self.inner {
            Inner::Sqlite(c) => {
                let mut stmt = c.prepare_cached(sql)?;
                Ok(stmt.execute(rusqlite::params_from_iter(values.iter()))?)
            }
            Inner::Postgres(cell) => {
                let mut pg = cell.borrow_mut();
                // A failed statement aborts a PostgreSQL transaction but not
                // a SQLite one; the savepoint gives both the same rule (the
                // statement is undone, the transaction goes on), which the
                // callers that turn a unique violation into an answer need.
                let result = pg.tx.batch_execute("SAVEPOINT socle_statement").and_then(|()| {
                    let stmt = pg.statement_raw(sql)?;
                    let refs = pg_params(&values);
                    pg.tx.execute(&stmt, &refs)
                });
                let end = match &result {
                    Ok(_) => "RELEASE SAVEPOINT socle_statement",
                    Err(_) => "ROLLBACK TO SAVEPOINT socle_statement; RELEASE SAVEPOINT socle_statement",
                };
                let end = pg.tx.batch_execute(end);
                let n = self.pg_result(result)?;
                self.pg_result(end)?;
                Ok(n as usize)
            }
        }
    }

    /// Runs statements separated by `;`, without parameters (schema changes).
    pub fn execute_batch(&self, sql: &str) -> Result<()> {
        match &self.inner {
            Inner::Sqlite(c) => Ok(c.execute_batch(sql)?),
            Inner::Postgres(cell) => self.pg_result(cell.borrow_mut().tx.batch_execute(sql)),
        }
    }

    /// Every row of a query.
    pub fn query(&self, sql: &str, params: impl Params) -> Result<Vec<Row>> {
        let values = params.values();
        match &self.inner {
            Inner::Sqlite(c) => {
                let mut stmt = c.prepare_cached(sql)?;
                let columns: Arc<[String]> = stmt.column_names().into_iter().map(String::from).collect();
                let n = columns.len();
                let mut rows = stmt.query(rusqlite::params_from_iter(values.iter()))?;
                let mut out = Vec::new();
                while let Some(r) = rows.next()? {
                    let mut vals = Vec::with_capacity(n);
                    for i in 0..n {
                        vals.push(sqlite_value(r.get_ref(i)?));
                    }
                    out.push(Row { columns: columns.clone(), values: vals });
                }
                Ok(out)
            }
            Inner::Postgres(cell) => {
                let mut pg = cell.borrow_mut();
                let rows = pg.statement_raw(sql).and_then(|stmt| pg.tx.query(&stmt, &pg_params(&values)));
                let rows = self.pg_result(rows)?;
                let columns: Arc<[String]> = match rows.first() {
                    Some(r) => r.columns().iter().map(|c| c.name().to_owned()).collect(),
                    None => Arc::from(Vec::new()),
                };
                rows.iter()
                    .map(|r| {
                        let values = (0..columns.len())
                            .map(|i| r.try_get::<_, PgValue>(i).map(|v| v.0))
                            .collect::<Result<Vec<_>, _>>()?;
                        Ok(Row { columns: columns.clone(), values })
                    })
                    .collect()
            }
        }
    }

    /// The rows of a query, each mapped by `f`.
    pub fn query_map<T>(&self, sql: &str, params: impl Params, f: impl FnMut(&Row) -> Result<T>) -> Result<Vec<T>> {
        self.query(sql, params)?.iter().map(f).collect()
    }

    /// The first row of a query mapped by `f`; [`StoreError::NoRows`] if none.
    pub fn query_row<T>(&self, sql: &str, params: impl Params, f: impl FnOnce(&Row) -> Result<T>) -> Result<T> {
        let rows = self.query(sql, params)?;
        rows.first().map(f).unwrap_or(Err(StoreError::NoRows))
    }

    /// Notes a lost serialization race (the transaction will be run
    /// again) and converts the error.
    fn pg_result<T>(&self, r: Result<T, postgres::Error>) -> Result<T> {
        r.map_err(|e| {
            let e = StoreError::from(e);
            if e.is_serialization_failure() {
                self.lost_race.set(true);
            }
            e
        })
    }

    /// A statement to run several times (prepared once per connection).
    pub fn prepare<'c>(&'c self, sql: &str) -> Result<Statement<'c, 'a>> {
        Ok(Statement { conn: self, sql: sql.to_owned() })
    }

    /// Same as [`Conn::prepare`]: every statement is cached per connection.
    pub fn prepare_cached<'c>(&'c self, sql: &str) -> Result<Statement<'c, 'a>> {
        self.prepare(sql)
    }
}

/// A statement bound to its handle (see [`Conn::prepare`]).
pub struct Statement<'c, 'a> {
    conn: &'c Conn<'a>,
    sql: String,
}

impl Statement<'_, '_> {
    pub fn execute(&mut self, params: impl Params) -> Result<usize> {
        self.conn.execute(&self.sql, params)
    }

    /// Rows mapped by `f`, as an iterator of results (rusqlite's shape).
    pub fn query_map<T>(
        &mut self,
        params: impl Params,
        mut f: impl FnMut(&Row) -> Result<T>,
    ) -> Result<std::vec::IntoIter<Result<T>>> {
        let rows = self.conn.query(&self.sql, params)?;
        Ok(rows.iter().map(&mut f).collect::<Vec<_>>().into_iter())
    }

    pub fn query_row<T>(&mut self, params: impl Params, f: impl FnOnce(&Row) -> Result<T>) -> Result<T> {
        self.conn.query_row(&self.sql, params, f)
    }

    pub fn exists(&mut self, params: impl Params) -> Result<bool> {
        Ok(!self.conn.query(&self.sql, params)?.is_empty())
    }
}

impl PgTx<'_> {
    fn statement_raw(&mut self, sql: &str) -> Result<postgres::Statement, postgres::Error> {
        if let Some(s) = self.statements.get(sql) {
            return Ok(s.clone());
        }
        let s = self.tx.prepare(&to_postgres_placeholders(sql))?;
        // Filters of any shape make statements of any text: bound the cache.
        if self.statements.len() >= MAX_CACHED_STATEMENTS {
            self.statements.clear();
        }
        self.statements.insert(sql.to_owned(), s.clone());
        Ok(s)
    }
}

fn sqlite_value(v: rusqlite::types::ValueRef<'_>) -> Value {
    use rusqlite::types::ValueRef;
    match v {
        ValueRef::Null => Value::Null,
        ValueRef::Integer(i) => Value::Int(i),
        ValueRef::Real(f) => Value::Real(f),
        ValueRef::Text(t) => Value::Text(String::from_utf8_lossy(t).into_owned()),
        ValueRef::Blob(b) => Value::Blob(b.to_vec()),
    }
}

impl rusqlite::ToSql for Value {
    fn to_sql(&self) -> rusqlite::Result<rusqlite::types::ToSqlOutput<'_>> {
        use rusqlite::types::{ToSqlOutput, ValueRef};
        Ok(ToSqlOutput::Borrowed(match self {
            Value::Null => ValueRef::Null,
            Value::Int(i) => ValueRef::Integer(*i),
            Value::Real(f) => ValueRef::Real(*f),
            Value::Text(s) => ValueRef::Text(s.as_bytes()),
            Value::Blob(b) => ValueRef::Blob(b),
        }))
    }
}

/// Rewrites SQLite's `?N` and `?` placeholders to PostgreSQL's `$N`,
/// leaving quoted strings, quoted identifiers and comments alone.
pub fn to_postgres_placeholders(sql: &str) -> String {
    let mut out = String::with_capacity(sql.len() + 8);
    let mut chars = sql.chars().peekable();
    let mut next = 1;
    while let Some(c) = chars.next() {
        match c {
            '\'' | '"' => {
                out.push(c);
                for d in chars.by_ref() {
                    out.push(d);
                    if d == c {
                        break;
                    }
                }
            }
            '-' if chars.peek() == Some(&'-') => {
                out.push(c);
                for d in chars.by_ref() {
                    out.push(d);
                    if d == '\n' {
                        break;
                    }
                }
            }
            '?' => {
                let mut digits = String::new();
                while let Some(d) = chars.peek().filter(|d| d.is_ascii_digit()) {
                    digits.push(*d);
                    chars.next();
                }
                out.push('$');
                if digits.is_empty() {
                    out.push_str(&next.to_string());
                    next += 1;
                } else {
                    out.push_str(&digits);
                }
            }
            c => out.push(c),
        }
    }
    out
}

fn pg_params(values: &[Value]) -> Vec<&(dyn postgres::types::ToSql + Sync)> {
    values.iter().map(|v| v as &(dyn postgres::types::ToSql + Sync)).collect()
}

/// A value bound to PostgreSQL: converted to the type the server inferred
/// for the placeholder, so the one integer type of the Rust side serves
/// BIGINT, INTEGER and BOOLEAN parameters alike.
impl postgres::types::ToSql for Value {
    fn to_sql(
        &self,
        ty: &postgres::types::Type,
        out: &mut bytes::BytesMut,
    ) -> Result<postgres::types::IsNull, Box<dyn std::error::Error + Sync + Send>> {
        use postgres::types::{IsNull, Type};
        match self {
            Value::Null => Ok(IsNull::Yes),
            Value::Int(i) => match *ty {
                Type::INT8 => i.to_sql(ty, out),
                Type::INT4 => i32::try_from(*i)?.to_sql(ty, out),
                Type::INT2 => i16::try_from(*i)?.to_sql(ty, out),
                Type::BOOL => (*i != 0).to_sql(ty, out),
                Type::FLOAT8 => (*i as f64).to_sql(ty, out),
                Type::TEXT | Type::VARCHAR => i.to_string().to_sql(ty, out),
                _ => Err(format!("cannot bind an integer to a {ty} parameter").into()),
            },
            Value::Real(f) => match *ty {
                Type::FLOAT8 => f.to_sql(ty, out),
                Type::FLOAT4 => (*f as f32).to_sql(ty, out),
                _ => Err(format!("cannot bind a real to a {ty} parameter").into()),
            },
            Value::Text(s) => s.as_str().to_sql(ty, out),
            Value::Blob(b) => b.as_slice().to_sql(ty, out),
        }
    }

    fn accepts(_: &postgres::types::Type) -> bool {
        true
    }

    postgres::types::to_sql_checked!();
}

/// A column read from PostgreSQL into the store's [`Value`].
struct PgValue(Value);

impl<'r> postgres::types::FromSql<'r> for PgValue {
    fn from_sql(
        ty: &postgres::types::Type,
        raw: &'r [u8],
    ) -> Result<Self, Box<dyn std::error::Error + Sync + Send>> {
        use postgres::types::Type;
        Ok(PgValue(match *ty {
            Type::INT8 => Value::Int(i64::from_sql(ty, raw)?),
            Type::INT4 => Value::Int(i32::from_sql(ty, raw)?.into()),
            Type::INT2 => Value::Int(i16::from_sql(ty, raw)?.into()),
            Type::BOOL => Value::Int(bool::from_sql(ty, raw)?.into()),
            Type::FLOAT8 => Value::Real(f64::from_sql(ty, raw)?),
            Type::FLOAT4 => Value::Real(f32::from_sql(ty, raw)?.into()),
            Type::BYTEA => Value::Blob(Vec::<u8>::from_sql(ty, raw)?),
            Type::NUMERIC => Value::Int(integral_numeric(raw)?),
            Type::VOID => Value::Null,
            _ => Value::Text(String::from_sql(ty, raw)?),
        }))
    }

    fn from_sql_null(_: &postgres::types::Type) -> Result<Self, Box<dyn std::error::Error + Sync + Send>> {
        Ok(PgValue(Value::Null))
    }

    fn accepts(ty: &postgres::types::Type) -> bool {
        use postgres::types::Type;
        matches!(
            *ty,
            Type::INT8
                | Type::INT4
                | Type::INT2
                | Type::BOOL
                | Type::FLOAT8
                | Type::FLOAT4
                | Type::BYTEA
                | Type::NUMERIC
                | Type::VOID
                | Type::TEXT
                | Type::VARCHAR
                | Type::BPCHAR
                | Type::NAME
                | Type::UNKNOWN
        )
    }
}

/// Decodes PostgreSQL's binary NUMERIC when it holds an integer: what
/// `SUM(bigint)` returns. Base-10000 digits, `weight` the power of the first.
fn integral_numeric(raw: &[u8]) -> Result<i64, Box<dyn std::error::Error + Sync + Send>> {
    let word = |i: usize| -> Result<u16, Box<dyn std::error::Error + Sync + Send>> {
        raw.get(i * 2..i * 2 + 2).map(|b| u16::from_be_bytes([b[0], b[1]])).ok_or_else(|| "short numeric".into())
    };
    let ndigits = word(0)? as usize;
    let weight = word(1)? as i16;
    let sign = word(2)?;
    if sign == 0xC000 {
        return Err("NaN".into());
    }
    let mut value: i128 = 0;
    for i in 0..ndigits {
        let power = weight as i32 - i as i32;
        let digit = word(4 + i)? as i128;
        if power < 0 {
            if digit != 0 {
                return Err("numeric with a fraction".into());
            }
            continue;
        }
        value += digit * 10_000i128.pow(power as u32);
    }
    if sign == 0x4000 {
        value = -value;
    }
    Ok(i64::try_from(value)?)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn placeholders_are_rewritten_outside_quotes_and_comments() {
        assert_eq!(
            to_postgres_placeholders("SELECT a FROM t WHERE b = ?1 AND c = '?2' -- ?3\n AND d = ?12 AND \"?\" = ?"),
            "SELECT a FROM t WHERE b = $1 AND c = '?2' -- ?3\n AND d = $12 AND \"?\" = $1"
        );
    }
}
