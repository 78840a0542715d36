from bastion.ssh.channel import parse_command


def test_forms() -> None:
    assert parse_command("web1") == ("web1", None)
    assert parse_command("web1 -- echo hi") == ("web1", "echo hi")
    assert parse_command("web1 --") == ("web1", None)
    assert parse_command("  web1   --   ls -la 'a b' | wc -l ") == ("web1", "ls -la 'a b' | wc -l")
    assert parse_command("web1 uptime") == ("web1", "uptime")
    assert parse_command("web1 --version") == ("web1", "--version")
    assert parse_command("") == ("", None)

