// A new migration file must trigger a rebuild, or `sqlx::migrate!` embeds a stale set.
fn main() {
    println!("cargo:rerun-if-changed=migrations");
}
