import pytest

from tests.factories import MembershipFactory
from workspaces.models import Role

pytestmark = [pytest.mark.browser, pytest.mark.django_db(transaction=True)]


def test_sign_in_lands_on_the_workspace_list(page, sign_in, screenshot):
    membership = MembershipFactory(role=Role.OWNER, workspace__name="Studio")
    sign_in(membership.user)
    assert page.get_by_role("link", name="Studio").is_visible()
    screenshot("home")
