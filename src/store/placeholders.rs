//! `$n` lists for multi-row statements whose batches stay small (sessions, reservations).

/// `($1, $2, …), ($k, …)` for `rows` rows of `cols` parameters.
pub fn placeholders(rows: usize, cols: usize) -> String {
    placeholders_after(0, rows, cols)
}

/// [`placeholders`] numbered from `$skip + 1`, for statements whose first parameters are
/// shared by every row.
pub fn placeholders_after(skip: usize, rows: usize, cols: usize) -> String {
    let mut s = String::with_capacity(rows * cols * 5);
    for r in 0..rows {
        s.push_str(if r == 0 { "(" } else { ", (" });
        for c in 0..cols {
            if c > 0 {
                s.push_str(", ");
            }
            s.push('$');
            s.push_str(&(skip + r * cols + c + 1).to_string());
        }
        s.push(')');
    }
    s
}

#[cfg(test)]
mod tests {
    use super::{placeholders, placeholders_after};

    #[test]
    fn placeholders_number_rows_of_parameters_in_order() {
        assert_eq!(placeholders(2, 3), "($1, $2, $3), ($4, $5, $6)");
        assert_eq!(placeholders(1, 1), "($1)");
        assert_eq!(placeholders_after(1, 2, 2), "($2, $3), ($4, $5)");
    }
}
