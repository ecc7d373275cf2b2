// Temporary stand-in while the CLI is written; replaced by the real module.
#[derive(clap::Args, Debug)]
pub struct Connection {}
#[derive(clap::Subcommand, Debug)]
pub enum AppsCommand {
    List,
}
#[derive(clap::Subcommand, Debug)]
pub enum KeysCommand {
    List,
}
pub async fn run_apps(_: &Connection, _: AppsCommand) -> Result<(), String> {
    Err("pending".into())
}
pub async fn run_keys(_: &Connection, _: KeysCommand) -> Result<(), String> {
    Err("pending".into())
}
