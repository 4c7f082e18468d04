use super::*;

fn dump(text: &str) -> String {
    parse(text).unwrap().dump()
}

#[test]
fn directives_only_at_top_and_case_insensitive() {
    let ast = parse("# Syntax = docker/dockerfile:1\n#ESCAPE=`\n# check=skip=all\nFROM a\nRUN x `\n  y\n").unwrap();
    assert_eq!(ast.escape, '`');
    assert_eq!(ast.directive("syntax"), Some("docker/dockerfile:1"));
    assert_eq!(ast.directive("check"), Some("skip=all"));
    assert_eq!(ast.dump(), "(from \"a\")\n(run \"x   y\")\n");
    // After a comment, a directive is only a comment.
    let ast = parse("# hello\n# escape=`\nFROM a\n").unwrap();
    assert_eq!(ast.escape, '\\');
    assert!(ast.directives.is_empty());
}

#[test]
fn duplicate_and_invalid_directives_fail() {
    let err = parse("# escape=`\n# escape=\\\nFROM a\n").unwrap_err();
    assert_eq!(err.span.start_line, 2);
    assert!(err.message.contains("only one `escape`"), "{}", err.message);
    assert!(parse("# syntax=a\n# SYNTAX=b\nFROM a\n").is_err());
    assert!(parse("# escape=x\nFROM a\n").is_err());
}

#[test]
fn bom_crlf_and_spans() {
    let ast = parse("\u{feff}FROM a\r\nRUN x \\\r\n  y\r\n\r\n  COPY a b\r\n").unwrap();
    assert_eq!(ast.dump(), "(from \"a\")\n(run \"x   y\")\n(copy \"a\" \"b\")\n");
    assert_eq!(ast.nodes[1].span, Span { start_line: 2, end_line: 3, column: 1 });
    assert_eq!(ast.nodes[2].span, Span { start_line: 5, end_line: 5, column: 3 });
    assert_eq!(ast.span, Span { start_line: 1, end_line: 5, column: 1 });
}

#[test]
fn comments_and_empty_lines_in_continuations() {
    let ast = parse("FROM a\nRUN a \\\n# c\n\n   # d\n  b\n").unwrap();
    assert_eq!(ast.nodes[1].args, vec!["a   b"]);
    assert_eq!(ast.nodes[1].span.end_line, 6);
    assert_eq!(ast.warnings.len(), 1);
}

#[test]
fn escaped_escape_is_not_a_continuation() {
    assert_eq!(
        dump("FROM a\nENV C x\\\\\nENV D y\n"),
        "(from \"a\")\n(env \"C\" \"x\\\\\\\\\" \"\")\n(env \"D\" \"y\" \"\")\n"
    );
}

#[test]
fn heredocs() {
    let text = "FROM a\nRUN <<EOF\necho hi\nEOF\nRUN <<-\"EOT\" cat <<'X' > f\n\techo $a\n\tEOT\nline\nX\nCOPY <<one <<two /dest/\n1\none\n2\ntwo\nCMD x\n";
    let ast = parse(text).unwrap();
    let run = &ast.nodes[1];
    assert_eq!(run.args, vec!["<<EOF"]);
    assert_eq!(
        run.heredocs,
        vec![Heredoc {
            name: "EOF".into(),
            content: "echo hi\n".into(),
            expand: true,
            chomp: false,
            file_descriptor: 0
        }]
    );
    assert_eq!(run.span, Span { start_line: 2, end_line: 4, column: 1 });
    let run2 = &ast.nodes[2];
    assert_eq!(run2.heredocs.len(), 2);
    assert_eq!(run2.heredocs[0].name, "EOT");
    assert!(!run2.heredocs[0].expand && run2.heredocs[0].chomp);
    assert_eq!(run2.heredocs[0].content, "\techo $a\n");
    assert_eq!(run2.heredocs[0].effective_content(), "echo $a\n");
    assert_eq!(run2.heredocs[1].name, "X");
    assert!(!run2.heredocs[1].expand);
    let copy = &ast.nodes[3];
    assert_eq!(copy.args, vec!["<<one", "<<two", "/dest/"]);
    assert_eq!(copy.heredocs.iter().map(|h| h.content.as_str()).collect::<Vec<_>>(), vec!["1\n", "2\n"]);
    assert_eq!(ast.nodes[4].name, "cmd");
    assert_eq!(ast.nodes[4].span.start_line, 15);
}

#[test]
fn heredoc_not_in_json_or_quotes_or_other_instructions() {
    let ast = parse("FROM a\nRUN [\"cat\", \"<<EOF\"]\nRUN echo \"<<EOF\"\nCMD <<EOF\nEOF\n").unwrap();
    assert!(ast.nodes.iter().all(|n| n.heredocs.is_empty()));
    assert_eq!(ast.nodes.len(), 5);
}

#[test]
fn onbuild_heredoc_and_unterminated() {
    let ast = parse("FROM a\nONBUILD RUN <<EOF\nx\nEOF\n").unwrap();
    assert_eq!(ast.nodes[1].heredocs.len(), 1);
    assert_eq!(ast.nodes[1].dump(), "onbuild (run \"<<EOF\")");
    let err = parse("FROM a\nRUN <<EOF\nx\n").unwrap_err();
    assert!(err.message.contains("unterminated heredoc"));
    assert_eq!(err.span.start_line, 2);
}

#[test]
fn heredoc_word_forms() {
    let h = parse_heredoc("3<<-'E O'").unwrap().unwrap();
    assert_eq!((h.name.as_str(), h.file_descriptor, h.chomp, h.expand), ("E O", 3, true, false));
    let h = parse_heredoc("<<E\"O\"F").unwrap().unwrap();
    assert_eq!((h.name.as_str(), h.expand), ("EOF", false));
    let h = parse_heredoc("2<<EOF").unwrap().unwrap();
    assert_eq!((h.file_descriptor, h.expand), (2, true));
    assert_eq!(parse_heredoc("<<").unwrap(), None);
    assert_eq!(parse_heredoc("a<<EOF").unwrap(), None);
}

#[test]
fn empty_files_fail() {
    assert!(parse("").is_err());
    assert!(parse("# just a comment\n\n").is_err());
    assert!(parse("\u{feff}").is_err());
}

#[test]
fn json_and_shell_forms() {
    let ast = parse("CMD [\"a\", \"b\"]\nCMD ['a']\nENTRYPOINT [\"a\"] trailing\nSHELL []\n").unwrap();
    assert!(ast.nodes[0].json);
    assert!(!ast.nodes[1].json);
    assert_eq!(ast.nodes[2].args, vec!["a"]);
    assert!(ast.nodes[3].json && ast.nodes[3].args.is_empty());
    assert!(parse("CMD [\"a\", [\"b\"]]\n").is_err());
}

#[test]
fn unknown_words_are_kept() {
    let ast = parse("FROOM alpine\n").unwrap();
    assert_eq!(ast.nodes[0].name, "froom");
    assert_eq!(ast.nodes[0].keyword, "FROOM");
}
