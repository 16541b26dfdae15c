"""The Content-Security-Policy in a real browser: no page of collab's, the editor at work, its
history, the admin and the API docs, makes Chromium refuse anything. (It found CodeMirror's
<style> element, which the editor's page now allows.)"""

from tests.browser.conftest import open_document, type_at_end, wait_text

VIOLATIONS = """() => (window.__csp || []).map(
    v => `${v.violatedDirective} ${v.sourceFile}:${v.lineNumber}:${v.columnNumber} ${v.sample}`
)"""
LISTEN = """document.addEventListener('securitypolicyviolation', v => {
    (window.__csp = window.__csp || []).push(v);
});"""


def watched(people, user):
    page = people.page(user)
    page.add_init_script(LISTEN)
    messages = []
    page.on(
        "console",
        lambda m: messages.append(m.text) if "Content Security Policy" in m.text else None,
    )
    return page, messages


def test_no_page_breaks_the_policy(people, document, owner, viewer):
    owner.is_staff = owner.is_superuser = True
    owner.save()
    page, messages = watched(people, owner)

    open_document(page, document)
    type_at_end(
        page, "| a | b |\n|--:|:-:|\n| 1 | 2 |\n\n**bold** and a [link](https://example.com)"
    )
    wait_text(page, "**bold**")
    page.locator("#history-toggle").click()
    page.locator("#version-name").fill("First")
    page.locator("[data-history=form] button").click()
    page.locator(".version", has_text="First").click()
    page.locator("[data-history=detail]", has_text="bold").wait_for()
    seen = {"editor": page.evaluate(VIOLATIONS)}

    for path in (
        "/documents/",
        f"/documents/{document.pk}/share/",
        "/accounts/password_change/",
        "/admin/",
        f"/admin/editor/document/{document.pk}/change/",
        "/admin/editor/document/",
        "/api/docs/",
    ):
        page.goto(path)
        page.wait_for_load_state("load")
        seen[path] = page.evaluate(VIOLATIONS)
    page.locator(".swagger-ui").first.wait_for()
    seen["/api/docs/ (rendered)"] = page.evaluate(VIOLATIONS)

    anonymous, anonymous_messages = watched(people, None)
    for path in ("/", "/accounts/login/", "/accounts/signup/"):
        anonymous.goto(path)
        anonymous.wait_for_load_state("load")
        seen[path] = anonymous.evaluate(VIOLATIONS)

    assert {path: found for path, found in seen.items() if found} == {}
    assert messages + anonymous_messages == []
    assert page.errors == []
