//! The migrations are embedded by `sqlx::migrate!`; a new or changed file must rebuild the crate.

fn main() {
    println!("cargo:rerun-if-changed=src/store/sqlite/migrations");
    println!("cargo:rerun-if-changed=src/store/postgres/migrations");
}
