"""Named domain errors of the hosts app; views turn them into messages, the API into 4xx."""


class HostsError(Exception):
    status = 400
    code = "invalid"

    def __init__(self, detail: str):
        super().__init__(detail)
        self.detail = detail


class InvalidTag(HostsError):
    code = "invalid_tag"


class EnrollmentExists(HostsError):
    status = 409
    code = "enrollment_exists"


class EnrollmentNotFound(HostsError):
    status = 404
    code = "enrollment_not_found"


class MachineBoundToOtherEnrollment(HostsError):
    status = 403
    code = "machine_bound_to_other_enrollment"


class InvalidTagRule(HostsError):
    code = "invalid_tag_rule"


class TagRuleExists(HostsError):
    status = 409
    code = "tag_rule_exists"


class InvalidProfile(HostsError):
    code = "invalid_profile"

    def __init__(self, detail: str, field: str | None = None):
        super().__init__(detail)
        self.field = field


class ProfileExists(HostsError):
    status = 409
    code = "profile_exists"


class TagExists(HostsError):
    status = 409
    code = "tag_exists"

    def __init__(self, detail: str, field: str | None = "name"):
        super().__init__(detail)
        self.field = field


class TagInUse(HostsError):
    status = 409
    code = "tag_in_use"


class InvalidEnrollment(HostsError):
    code = "invalid_enrollment"

    def __init__(self, detail: str, field: str | None = None):
        super().__init__(detail)
        self.field = field


class EnrollmentIssuerTaken(HostsError):
    status = 409
    code = "enrollment_issuer_taken"
    field = "client_cert_issuer"
