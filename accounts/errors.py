"""Named domain errors of the accounts app; views and commands turn them into messages."""


class AccountsError(Exception):
    status = 400
    code = "invalid"

    def __init__(self, detail: str, field: str | None = None):
        super().__init__(detail)
        self.detail = detail
        self.field = field


class InvalidScope(AccountsError):
    code = "invalid_scope"


class InvalidToken(AccountsError):
    code = "invalid_token"


class TokenNameExists(AccountsError):
    status = 409
    code = "token_name_exists"


class InvalidUnlock(AccountsError):
    code = "invalid_unlock"
