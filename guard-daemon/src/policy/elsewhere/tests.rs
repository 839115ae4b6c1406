use super::*;

/// What a command line (split like a shell would) runs elsewhere.
fn inner(line: &str) -> Vec<(String, Vec<String>, Option<String>)> {
    let argv = shlex::split(line).unwrap();
    commands(&CommandContext::from_argv(&argv))
        .into_iter()
        .map(|e| (e.via, e.command.argv, e.command.cwd))
        .collect()
}

fn argvs(line: &str) -> Vec<String> {
    inner(line)
        .into_iter()
        .map(|(_, argv, _)| argv.join(" "))
        .collect()
}

#[test]
fn ssh_runs_a_shell_line_on_the_host() {
    let found = inner("ssh -p 2222 -i key db1 'cd /srv && rm -rf data; ls'");
    assert_eq!(
        argvs("ssh -p 2222 -i key db1 'cd /srv && rm -rf data; ls'"),
        ["cd /srv", "rm -rf data", "ls"]
    );
    assert_eq!(found[1].0, "ssh on db1");
    assert_eq!(found[1].2.as_deref(), Some("/"));
    assert_eq!(
        argvs("ssh -vp22 host sudo -u mysql rm -rf /var/lib/mysql"),
        ["rm -rf /var/lib/mysql"]
    );
    assert!(inner("ssh host").is_empty());
    assert!(inner("ssh -L 8080:localhost:80 host").is_empty());
    assert_eq!(
        argvs(r#"ssh h "bash -c 'FOO=1 psql -c \"DROP TABLE t\"'""#),
        ["psql -c DROP TABLE t"]
    );
    // The command may also come as an option.
    assert_eq!(
        argvs("ssh -o 'RemoteCommand=rm -rf /srv' db1"),
        ["rm -rf /srv"]
    );
    assert_eq!(
        argvs("ssh -oremotecommand='rm -rf /srv' db1"),
        ["rm -rf /srv"]
    );
    assert!(inner("ssh -o StrictHostKeyChecking=no db1").is_empty());
}

#[test]
fn containers_map_bind_mounts_back_to_the_host() {
    let found = inner("docker run --rm -v /home/dev:/h alpine rm -rf /h/project");
    assert_eq!(found[0].1, ["rm", "-rf", "/home/dev/project"]);
    assert_eq!(found[0].0, "docker run alpine");
    let found = inner(
        "podman container run -it --mount type=bind,src=/srv,dst=/data -w /data img sh -c 'rm -rf old'",
    );
    assert_eq!(found[0].1, ["rm", "-rf", "old"]);
    assert_eq!(found[0].2.as_deref(), Some("/srv"));
    assert_eq!(
        argvs("docker exec -e A=1 db psql -c 'DROP DATABASE app'"),
        ["psql -c DROP DATABASE app"]
    );
    assert_eq!(
        argvs("docker run --entrypoint rm alpine -rf /x"),
        ["rm -rf /x"]
    );
    assert_eq!(
        argvs("docker compose -f dev.yml exec -T db dropdb app"),
        ["dropdb app"]
    );
    assert_eq!(
        argvs("docker-compose run --rm web rm -rf /data"),
        ["rm -rf /data"]
    );
    assert!(inner("docker run -d nginx").is_empty());
    assert!(inner("docker ps -a").is_empty());
    assert!(inner("docker compose up -d").is_empty());
}

#[test]
fn pods_run_what_follows_the_double_dash() {
    assert_eq!(
        argvs("kubectl exec -n prod -it db-0 -- psql -c 'DROP TABLE users'"),
        ["psql -c DROP TABLE users"]
    );
    assert_eq!(
        argvs("kubectl exec web -- sh -c 'rm -rf /data/*'"),
        ["rm -rf /data/*"]
    );
    assert_eq!(
        argvs("kubectl -n prod exec db-0 -- dropdb app"),
        ["dropdb app"]
    );
    assert!(inner("kubectl get pods -- x").is_empty());
    assert!(inner("kubectl exec web").is_empty());
}
