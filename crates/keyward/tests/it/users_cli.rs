//! `keyward user ...`: the operator's side of the platform's users, against the real binary.

use crate::helpers::{Server, cli, create_token};

#[tokio::test]
async fn the_operator_manages_people_and_service_accounts_from_the_command_line() {
    let dir = tempfile::tempdir().unwrap();
    let dir = dir.path();

    let out = cli(
        dir,
        &[
            "user",
            "add",
            "ada@example.com",
            "--external-id",
            "4711",
            "--email",
            "ada@example.com",
        ],
        None,
    );
    assert!(
        out.ok().starts_with("added user ada@example.com (usr_"),
        "{out:?}"
    );
    let out = cli(dir, &["user", "add", "deploy-bot", "--service"], None);
    assert!(
        out.ok().starts_with("added service account deploy-bot"),
        "{out:?}"
    );
    // A service account never signs in: no password.
    let refused = cli(
        dir,
        &["user", "add", "bot2", "--service", "--password-stdin"],
        Some("correct horse battery staple\n"),
    );
    assert_eq!(refused.code(), Some(2), "{refused:?}");
    assert!(refused.stderr.contains("cannot be used"), "{refused:?}");
    cli(dir, &["user", "add", "usr_01abc"], None).failed_cleanly(1);
    cli(dir, &["user", "add", "x", "--external-id", "4711"], None).failed_cleanly(1);

    // Show by name or id, as text or JSON.
    let ada = cli(dir, &["user", "show", "ada@example.com", "--json"], None).json();
    assert_eq!(ada["external_id"], "4711");
    assert_eq!(ada["kind"], "person");
    let id = ada["id"].as_str().unwrap().to_owned();
    let text = cli(dir, &["user", "show", &id], None);
    assert!(text.ok().contains("external id  4711"), "{text:?}");
    cli(dir, &["user", "show", "nobody"], None).failed_cleanly(1);

    let list = cli(dir, &["user", "list", "--json"], None).json();
    assert_eq!(list.as_array().unwrap().len(), 2);
    let table = cli(dir, &["user", "list"], None);
    assert!(table.ok().contains("service"), "{table:?}");

    // Admin flag, password, disable and enable.
    let out = cli(dir, &["user", "set-admin", "ada@example.com", "true"], None);
    assert!(out.ok().starts_with("admin ada@example.com"), "{out:?}");
    cli(
        dir,
        &["user", "passwd", "ada@example.com"],
        Some("correct horse battery staple\n"),
    )
    .ok();
    cli(
        dir,
        &["user", "passwd", "deploy-bot"],
        Some("correct horse battery staple\n"),
    )
    .failed_cleanly(1);
    cli(dir, &["user", "passwd", "ada@example.com"], Some("short\n")).failed_cleanly(1);

    // A token of the robot's works until the robot is deleted.
    let (robot, _) = create_token(dir, "deploy-bot", "deploys", &["droplet:read"]);
    let server = Server::start(dir, &[]);
    server.api.assert_active(&robot.secret).await;
    cli(dir, &["user", "disable", "deploy-bot"], None).ok();
    let v = server.api.verify(&robot.secret, &[]).await;
    assert_eq!(v["reason"], "owner_disabled", "{v}");
    cli(dir, &["user", "enable", "deploy-bot"], None).ok();
    server.api.assert_active(&robot.secret).await;

    // Deleting asks for confirmation; without a terminal, --yes is required.
    cli(dir, &["user", "delete", "deploy-bot"], None).failed_cleanly(1);
    server.api.assert_active(&robot.secret).await;
    let out = cli(dir, &["user", "delete", "deploy-bot", "--yes"], None);
    assert!(out.ok().contains("owner deleted"), "{out:?}");
    let v = server.api.verify(&robot.secret, &[]).await;
    assert_eq!(v["reason"], "revoked", "{v}");
    cli(dir, &["user", "show", "deploy-bot"], None).failed_cleanly(1);
    // The name is free again.
    cli(dir, &["user", "add", "deploy-bot", "--service"], None).ok();
    let tokens = cli(dir, &["token", "list", "--json"], None).json();
    let revoked = tokens
        .as_array()
        .unwrap()
        .iter()
        .find(|t| t["id"] == robot.id.as_str())
        .unwrap();
    assert_eq!(revoked["revoke_reason"], "owner deleted");
}
