"""First whole-sync checks, kept small; the thorough suites live beside them."""

from rules.services import RuleInput, rule_create

BIN = "a" * 64


def test_first_sync_is_clean_and_delivers_rules(agent, db):
    rule_create(data=RuleInput("BINARY", BIN, "BLOCKLIST", custom_msg="no"))
    result = agent.sync()
    assert result.sync_type == "CLEAN_ALL"
    assert agent.rules == {
        ("BINARY", BIN): {
            "policy": "BLOCKLIST",
            "custom_msg": "no",
            "custom_url": "",
            "cel_expr": "",
        }
    }
    again = agent.sync()
    assert again.sync_type == "NORMAL"
    assert again.rules_received == 0
