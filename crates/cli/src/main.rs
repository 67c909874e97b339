fn main() -> std::process::ExitCode {
    flotilla::main()
}
