"""Named domain errors of the rules app; the API answers them with 4xx and a JSON body."""


class RulesError(Exception):
    status = 400
    code = "invalid_rule"

    def __init__(self, detail, field: str | None = None):
        super().__init__(detail)
        self.detail = detail
        self.field = field


class InvalidIdentifier(RulesError):
    code = "invalid_identifier"


class InvalidRule(RulesError):
    code = "invalid_rule"


class RuleConflict(RulesError):
    status = 409
    code = "rule_conflict"


class InvalidImport(RulesError):
    """A rule file refused as a whole; the detail names the item or row and the field."""

    code = "invalid_import"

    def __init__(self, detail, field: str | None = None, index: int | None = None):
        super().__init__(detail, field)
        self.index = index
