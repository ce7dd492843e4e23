from django.contrib import admin

from hosts.admin import ReadOnlyAdmin

from .models import Rule, RuleVersion


@admin.register(Rule)
class RuleAdmin(ReadOnlyAdmin):
    list_display = ["rule_type", "identifier", "policy", "created_by", "updated_at"]
    list_filter = ["rule_type", "policy"]
    search_fields = ["identifier", "comment"]


@admin.register(RuleVersion)
class RuleVersionAdmin(ReadOnlyAdmin):
    list_display = ["rule_id", "rule_type", "identifier", "policy", "rev_from", "rev_to"]
    search_fields = ["identifier"]
