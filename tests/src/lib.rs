//! Integration tests live in tests/<area>/main.rs.
