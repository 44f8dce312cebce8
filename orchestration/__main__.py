from orchestration.cli import main

if __name__ == "__main__":  # not in a process that imports it as another main (multiprocessing spawn)
    main()
