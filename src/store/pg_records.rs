//! Postgres: a batch's rows as one array literal of the table's row type, read back with
//! `unnest($n::text::table[])`.
//!
//! The write-backs sent their rows as JSON (`json_populate_recordset`), and Postgres spent
//! about 11 µs per 16-field row parsing it: a hash table per object, every key copied.
//! The same rows as a row-type array take about 4 µs (measured with `pgbench` on 1,000
//! rows, BENCHMARKS.md). One text parameter per statement stays, as with JSON.
//!
//! Fields are written in the order of the write-back's columns, which must be the
//! table's own (`Db::migrate` checks them against `pg_attribute`); a field a row leaves out is
//! written as NULL, for the statement's `COALESCE` to give its default.

use serde::ser::{self, Impossible, Serialize};
use std::fmt::Write as _;

/// `rows` as a Postgres array literal of records with `columns`, in that order.
pub fn encode<T: Serialize>(rows: &[T], columns: &[&str]) -> String {
    let mut out = String::with_capacity(64 + rows.len() * 24 * columns.len());
    let mut row = RowWriter {
        columns,
        fields: Vec::with_capacity(columns.len()),
        text: String::new(),
        next: 0,
        in_row: false,
    };
    out.push('{');
    for (i, r) in rows.iter().enumerate() {
        if i > 0 {
            out.push(',');
        }
        row.fields.clear();
        row.fields.resize(columns.len(), None);
        row.text.clear();
        row.next = 0;
        r.serialize(&mut row)
            .expect("rows of strings and numbers, named by their columns, serialise");
        out.push_str("\"(");
        for (c, field) in row.fields.iter().enumerate() {
            if c > 0 {
                out.push(',');
            }
            if let Some((start, end)) = *field {
                out.push_str(&row.text[start..end]);
            }
        }
        out.push_str(")\"");
    }
    out.push('}');
    out
}

/// One row's fields, each rendered into `text` at the range `fields` holds for its column.
struct RowWriter<'c> {
    columns: &'c [&'c str],
    fields: Vec<Option<(usize, usize)>>,
    text: String,
    /// Where the next field's column is looked for first: fields come in column order.
    next: usize,
    in_row: bool,
}

impl RowWriter<'_> {
    /// A scalar is a field of a row, never a row.
    fn field(&self) -> Result<(), Error> {
        if self.in_row {
            Ok(())
        } else {
            unsupported("a row that is not a struct")
        }
    }

    fn column(&mut self, name: &str) -> Result<usize, Error> {
        let at = if self.columns.get(self.next) == Some(&name) {
            self.next
        } else {
            self.columns
                .iter()
                .position(|c| *c == name)
                .ok_or_else(|| Error(format!("field {name} is not a column")))?
        };
        self.next = at + 1;
        Ok(at)
    }

    /// A string field: quoted in the record, and the record quoted in the array, so a
    /// backslash or a double quote is escaped twice.
    fn push_str(&mut self, s: &str) {
        self.text.push_str("\\\"");
        for ch in s.chars() {
            match ch {
                '\\' => self.text.push_str("\\\\\\\\"),
                '"' => self.text.push_str("\\\\\\\""),
                _ => self.text.push(ch),
            }
        }
        self.text.push_str("\\\"");
    }
}

#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct Error(String);

impl ser::Error for Error {
    fn custom<M: std::fmt::Display>(msg: M) -> Self {
        Self(msg.to_string())
    }
}

fn unsupported<T>(what: &str) -> Result<T, Error> {
    Err(Error(format!("{what} cannot go in a record")))
}

/// One serializer for a row and its fields: a row is a struct (`in_row` while its fields
/// are written), a field a string, an integer or a finite float.
impl<'a, 'c> ser::Serializer for &'a mut RowWriter<'c> {
    type Ok = ();
    type Error = Error;
    type SerializeStruct = Self;
    type SerializeSeq = Impossible<(), Error>;
    type SerializeTuple = Impossible<(), Error>;
    type SerializeTupleStruct = Impossible<(), Error>;
    type SerializeTupleVariant = Impossible<(), Error>;
    type SerializeMap = Impossible<(), Error>;
    type SerializeStructVariant = Impossible<(), Error>;

    fn serialize_struct(self, _: &'static str, _: usize) -> Result<Self, Error> {
        if self.in_row {
            return unsupported("a nested struct");
        }
        self.in_row = true;
        Ok(self)
    }
    fn serialize_str(self, s: &str) -> Result<(), Error> {
        self.field()?;
        self.push_str(s);
        Ok(())
    }
    fn serialize_i64(self, v: i64) -> Result<(), Error> {
        self.field()?;
        write!(self.text, "{v}").expect("writing to a String");
        Ok(())
    }
    fn serialize_u64(self, v: u64) -> Result<(), Error> {
        self.field()?;
        write!(self.text, "{v}").expect("writing to a String");
        Ok(())
    }
    fn serialize_f64(self, v: f64) -> Result<(), Error> {
        self.field()?;
        if !v.is_finite() {
            return unsupported("a float that is not finite");
        }
        write!(self.text, "{v}").expect("writing to a String");
        Ok(())
    }
    fn serialize_i8(self, v: i8) -> Result<(), Error> {
        self.serialize_i64(v.into())
    }
    fn serialize_i16(self, v: i16) -> Result<(), Error> {
        self.serialize_i64(v.into())
    }
    fn serialize_i32(self, v: i32) -> Result<(), Error> {
        self.serialize_i64(v.into())
    }
    fn serialize_u8(self, v: u8) -> Result<(), Error> {
        self.serialize_i64(v.into())
    }
    fn serialize_u16(self, v: u16) -> Result<(), Error> {
        self.serialize_i64(v.into())
    }
    fn serialize_u32(self, v: u32) -> Result<(), Error> {
        self.serialize_i64(v.into())
    }
    fn serialize_f32(self, v: f32) -> Result<(), Error> {
        self.serialize_f64(v.into())
    }
    fn serialize_newtype_struct<T: ?Sized + Serialize>(
        self,
        _: &'static str,
        value: &T,
    ) -> Result<(), Error> {
        value.serialize(self)
    }
    fn serialize_bool(self, _: bool) -> Result<(), Error> {
        unsupported("a bool")
    }
    fn serialize_char(self, _: char) -> Result<(), Error> {
        unsupported("a char")
    }
    fn serialize_bytes(self, _: &[u8]) -> Result<(), Error> {
        unsupported("bytes")
    }
    fn serialize_none(self) -> Result<(), Error> {
        unsupported("an option")
    }
    fn serialize_some<T: ?Sized + Serialize>(self, _: &T) -> Result<(), Error> {
        unsupported("an option")
    }
    fn serialize_unit(self) -> Result<(), Error> {
        unsupported("a unit")
    }
    fn serialize_unit_struct(self, _: &'static str) -> Result<(), Error> {
        unsupported("a unit")
    }
    fn serialize_unit_variant(self, _: &'static str, _: u32, _: &'static str) -> Result<(), Error> {
        unsupported("an enum")
    }
    fn serialize_newtype_variant<T: ?Sized + Serialize>(
        self,
        _: &'static str,
        _: u32,
        _: &'static str,
        _: &T,
    ) -> Result<(), Error> {
        unsupported("an enum")
    }
    fn serialize_seq(self, _: Option<usize>) -> Result<Self::SerializeSeq, Error> {
        unsupported("a sequence")
    }
    fn serialize_tuple(self, _: usize) -> Result<Self::SerializeTuple, Error> {
        unsupported("a tuple")
    }
    fn serialize_tuple_struct(
        self,
        _: &'static str,
        _: usize,
    ) -> Result<Self::SerializeTupleStruct, Error> {
        unsupported("a tuple")
    }
    fn serialize_tuple_variant(
        self,
        _: &'static str,
        _: u32,
        _: &'static str,
        _: usize,
    ) -> Result<Self::SerializeTupleVariant, Error> {
        unsupported("an enum")
    }
    fn serialize_map(self, _: Option<usize>) -> Result<Self::SerializeMap, Error> {
        unsupported("a map")
    }
    fn serialize_struct_variant(
        self,
        _: &'static str,
        _: u32,
        _: &'static str,
        _: usize,
    ) -> Result<Self::SerializeStructVariant, Error> {
        unsupported("an enum")
    }
}

impl ser::SerializeStruct for &mut RowWriter<'_> {
    type Ok = ();
    type Error = Error;

    fn serialize_field<T: ?Sized + Serialize>(
        &mut self,
        name: &'static str,
        value: &T,
    ) -> Result<(), Error> {
        let column = self.column(name)?;
        let start = self.text.len();
        value.serialize(&mut **self)?;
        self.fields[column] = Some((start, self.text.len()));
        Ok(())
    }

    fn skip_field(&mut self, _: &'static str) -> Result<(), Error> {
        Ok(())
    }

    fn end(self) -> Result<(), Error> {
        self.in_row = false;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(serde::Serialize)]
    struct Row<'a> {
        id: &'a str,
        #[serde(skip_serializing_if = "str::is_empty")]
        note: &'a str,
        count: i64,
        cost: f64,
    }

    const COLUMNS: [&str; 4] = ["id", "note", "count", "cost"];

    #[test]
    fn rows_are_records_in_column_order_with_left_out_fields_null() {
        let rows = [
            Row {
                id: "a",
                note: "",
                count: -3,
                cost: 0.5,
            },
            Row {
                id: "",
                note: "x y",
                count: 7,
                cost: 0.0,
            },
        ];
        assert_eq!(
            encode(&rows, &COLUMNS),
            r#"{"(\"a\",,-3,0.5)","(\"\",\"x y\",7,0)"}"#
        );
    }

    #[test]
    fn quotes_and_backslashes_are_escaped_for_the_record_and_the_array() {
        let rows = [Row {
            id: r#"say "hi" \ (a,b) {c}"#,
            note: "",
            count: 0,
            cost: 0.0,
        }];
        assert_eq!(
            encode(&rows, &COLUMNS),
            r#"{"(\"say \\\"hi\\\" \\\\ (a,b) {c}\",,0,0)"}"#
        );
    }

    #[test]
    fn no_rows_is_an_empty_array() {
        assert_eq!(encode::<Row>(&[], &COLUMNS), "{}");
    }

    #[test]
    #[should_panic(expected = "serialise")]
    fn a_field_that_is_no_column_is_refused() {
        encode(
            &[Row {
                id: "a",
                note: "n",
                count: 0,
                cost: 0.0,
            }],
            &["id", "count", "cost"],
        );
    }
}
