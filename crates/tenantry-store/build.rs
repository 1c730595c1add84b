// `sqlx::migrate!` embeds the migrations at compile time; without this a new migration file would not
// rebuild the crate, and a binary without it would run.
fn main() {
    println!("cargo:rerun-if-changed=migrations");
}
