//! The Read* operations' queries, answered in SQL: filters become WHERE
//! clauses, tag filters EXISTS sub-queries on the tags' primary key, and a
//! page is an indexed range scan from a keyset position (`created_at`, then
//! the ID, as Outscale sorts), so the cost of a read follows the size of
//! its answer, not of the account.

use crate::db::{Conn, Row, ToValue, Value};
use crate::Result;

/// Where a page starts: strictly after this (created_at, id).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct After {
    pub created_at: String,
    pub id: String,
}

/// A filtered, paged listing of one table for one account.
pub struct Listing {
    table: &'static str,
    id_column: &'static str,
    /// Whose listing it is: tag filters look at this account's tags only.
    account: String,
    clauses: Vec<String>,
    params: Vec<Value>,
}

impl Listing {
    /// Rows of `table` owned by `account` (its `account_id` column).
    pub fn new(table: &'static str, id_column: &'static str, account: &str) -> Listing {
        Listing::visible(table, id_column, account, "account_id = ?")
    }

    /// Rows of `table` that `account` may see, as `visibility` says: SQL
    /// whose every `?` stands for the account (e.g. its own rows, public
    /// ones and those shared with it).
    pub fn visible(table: &'static str, id_column: &'static str, account: &str, visibility: &str) -> Listing {
        let params = visibility.matches('?').map(|_| Value::Text(account.into())).collect();
        Listing { table, id_column, account: account.into(), clauses: vec![format!("({visibility})")], params }
    }

    /// `column` is one of `values`; no filter when `values` is None (an
    /// empty list matches nothing, as a filter that nothing passes).
    pub fn any_of<T: ToValue>(&mut self, column: &str, values: Option<&[T]>) -> &mut Listing {
        if let Some(values) = values {
            self.clauses.push(in_list(column, values.len()));
            self.params.extend(values.iter().map(ToValue::to_value));
        }
        self
    }

    /// A condition of the caller's (fixed SQL, no parameters).
    pub fn condition(&mut self, sql: &str) -> &mut Listing {
        self.clauses.push(sql.into());
        self
    }

    /// A condition with parameters, one per `?` in `sql`.
    pub fn condition_with<T: ToValue>(&mut self, sql: &str, params: &[T]) -> &mut Listing {
        self.clauses.push(format!("({sql})"));
        self.params.extend(params.iter().map(ToValue::to_value));
        self
    }

    /// `column IN (…values)` written into a larger condition: the SQL of
    /// [`Listing::condition_with`] for a list (nothing passes an empty one).
    pub fn in_list(column: &str, n: usize) -> String {
        in_list(column, n)
    }

    /// OSC's "shared with these accounts" filter: the listing account's own
    /// rows that `shares_table` (keyed by this listing's ID column) shares
    /// with one of `accounts`. Whom a row is shared with is its owner's to
    /// know, so another account's rows never pass. No filter when None.
    pub fn shared_with(&mut self, shares_table: &str, accounts: Option<&[String]>) -> &mut Listing {
        let Some(accounts) = accounts else { return self };
        let id = self.id_column;
        let sql = format!("account_id = ? AND {id} IN (SELECT {id} FROM {shares_table} WHERE {})", in_list("account_id", accounts.len()));
        let mut params = vec![Value::Text(self.account.clone())];
        params.extend(accounts.iter().map(ToValue::to_value));
        self.clauses.push(format!("({sql})"));
        self.params.extend(params);
        self
    }

    /// OSC's tag filters: each one given must match at least one of the
    /// account's tags on the row — `TagKeys` by key, `TagValues` by value,
    /// `Tags` by "KEY=VALUE". (Another account's tags on a row shared with
    /// this one are not this account's to see, nor to filter on.)
    pub fn tags(&mut self, keys: Option<&[String]>, values: Option<&[String]>, pairs: Option<&[String]>) -> &mut Listing {
        let account = Value::Text(self.account.clone());
        let exists = |cond: String| {
            format!(
                "EXISTS (SELECT 1 FROM tags t WHERE t.resource_id = {}.{} AND t.account_id = ? AND {cond})",
                self.table, self.id_column
            )
        };
        let mut add = Vec::new();
        if let Some(keys) = keys {
            add.push((exists(in_list("t.key", keys.len())), keys.iter().map(ToValue::to_value).collect::<Vec<_>>()));
        }
        if let Some(values) = values {
            add.push((exists(in_list("t.value", values.len())), values.iter().map(ToValue::to_value).collect()));
        }
        if let Some(pairs) = pairs {
            let cond = if pairs.is_empty() {
                "1 = 0".to_string()
            } else {
                format!("({})", vec!["(t.key = ? AND t.value = ?)"; pairs.len()].join(" OR "))
            };
            let params = pairs
                .iter()
                .flat_map(|p| {
                    let (k, v) = p.split_once('=').unwrap_or((p.as_str(), ""));
                    [Value::Text(k.into()), Value::Text(v.into())]
                })
                .collect();
            add.push((exists(cond), params));
        }
        for (clause, params) in add {
            self.clauses.push(clause);
            self.params.push(account.clone());
            self.params.extend(params);
        }
        self
    }

    /// At most `limit` rows after `after`, in (created_at, id) order, each
    /// read by `from_row` from `columns`.
    pub fn page<T>(
        &self,
        conn: &Conn,
        columns: &str,
        after: Option<&After>,
        limit: i64,
        from_row: impl FnMut(&Row) -> Result<T>,
    ) -> Result<Vec<T>> {
        let mut clauses = self.clauses.clone();
        let mut params = self.params.clone();
        if let Some(a) = after {
            // Spelled out rather than a row-value comparison, which
            // PostgreSQL's planner turns into an index range less often.
            clauses.push(format!("(created_at > ? OR (created_at = ? AND {} > ?))", self.id_column));
            params.extend([Value::Text(a.created_at.clone()), Value::Text(a.created_at.clone()), Value::Text(a.id.clone())]);
        }
        params.push(Value::Int(limit));
        let sql = format!(
            "SELECT {columns} FROM {table} WHERE {where_} ORDER BY created_at, {id} LIMIT ?",
            table = self.table,
            where_ = clauses.join(" AND "),
            id = self.id_column,
        );
        conn.query_map(&sql, params, from_row)
    }
}

/// `column IN (?, …)`, or a clause nothing passes for an empty list.
fn in_list(column: &str, n: usize) -> String {
    if n == 0 {
        "1 = 0".into()
    } else {
        format!("{column} IN ({})", vec!["?"; n].join(", "))
    }
}
